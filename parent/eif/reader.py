"""Reading and measuring an EIF without nitro-cli.

The walk follows the image-format crate's `EifReader::from_eif`: section headers
are read back to back from the end of the EIF header, each section's header and
data go into the CRC32 (zlib's CRC-32, the crate's CRC_32_ISO_HDLC) after the
EIF header minus its CRC field, and section data feeds the PCR hashers in file
order. As in describe-eif, a CRC that does not match is reported (`crc_ok`,
"CheckCRC": false) with the measurements still computed, not raised. nitro-cli
trusts the section table; this reader also checks it (range, overlap, agreement
with the walk) so a hand-edited file fails with a clear reason instead of being
measured differently than the hypervisor loads it.

Files are streamed in chunks: a real image is hundreds of MiB.
"""
from __future__ import annotations

import io
import logging
import os
import zlib
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, BinaryIO

from parent.eif.errors import (
    EifDuplicateSection,
    EifMissingKernel,
    EifMissingSection,
    EifSectionOutOfRange,
    EifSectionOverlap,
    EifSectionTableMismatch,
    EifSectionTooLarge,
    EifTooManySections,
    EifTruncated,
    EifUnreadable,
)
from parent.eif.format import (
    HEADER_CRC_SPAN,
    HEADER_SIZE,
    MAX_NUM_SECTIONS,
    SECTION_HEADER_SIZE,
    EifHeader,
    SectionHeader,
    SectionType,
)
from parent.eif.measure import EifMeasurements, PcrHasher
from parent.eif.metadata import EifIdentity, parse_metadata
from parent.eif.signature import SignatureInfo, read_signature, signature_matches

log = logging.getLogger(__name__)

CHUNK = 1 << 20
# Real signature sections are a few KiB and metadata sections a few KiB more
# (docker inspect output); anything far bigger is not an image nitro-cli made.
MAX_SIGNATURE_SIZE = 1 << 20
MAX_METADATA_SIZE = 16 << 20
# Sections that may appear at most once in an image.
_SINGLETONS = (SectionType.KERNEL, SectionType.CMDLINE, SectionType.SIGNATURE, SectionType.METADATA)


@dataclass(frozen=True)
class EifSection:
    index: int
    section_type: SectionType
    flags: int
    offset: int  # where its 12-byte header starts
    size: int  # of its data


@dataclass(frozen=True)
class EifDescription:
    header: EifHeader
    sections: tuple[EifSection, ...]
    file_size: int
    crc32: int  # computed from the contents
    measurements: EifMeasurements
    signature: SignatureInfo | None
    signature_check: bool | None
    metadata: EifIdentity | None

    @property
    def is_signed(self) -> bool:
        return self.signature is not None

    @property
    def crc_ok(self) -> bool:
        """describe-eif's CheckCRC: the header's CRC32 equals the contents'."""
        return self.crc32 == self.header.crc32

    def describe(self) -> dict[str, Any]:
        """`nitro-cli describe-eif`'s JSON object, plus the header under "Header"."""
        out: dict[str, Any] = {
            "EifVersion": self.header.version,
            "Measurements": self.measurements.as_dict(),
            "IsSigned": self.is_signed,
        }
        if self.signature is not None:
            cert = self.signature.certificate
            out["SigningCertificate"] = {
                "IssuerName": {a.oid._name: str(a.value) for a in cert.issuer},
                "Algorithm": cert.signature_algorithm_oid._name,
                "NotBefore": cert.not_valid_before_utc.isoformat(),
                "NotAfter": cert.not_valid_after_utc.isoformat(),
                "Signature": ":".join(f"{b:02X}" for b in cert.signature),
            }
        out["CheckCRC"] = self.crc_ok
        if self.signature_check is not None:
            out["SignatureCheck"] = self.signature_check
        if self.metadata is not None:
            out["ImageName"] = self.metadata.image_name
            out["ImageVersion"] = self.metadata.image_version
            out["Metadata"] = self.metadata.describe()
        out["Header"] = {
            "Version": self.header.version,
            "Flags": self.header.flags,
            "Architecture": self.header.architecture,
            "DefaultMemory": self.header.default_mem,
            "DefaultCpus": self.header.default_cpus,
            "SectionCount": self.header.section_count,
            "Crc32": f"{self.crc32:08x}",
            "HeaderCrc32": f"{self.header.crc32:08x}",
            "FileSize": self.file_size,
            "Sections": [
                {"Type": s.section_type.label, "Offset": s.offset, "Size": s.size, "Flags": s.flags}
                for s in self.sections
            ],
        }
        return out


def read_eif(path: str | os.PathLike[str]) -> EifDescription:
    """Check and measure the EIF at `path`.

    A malformed file raises an EifError subclass; a CRC32 that does not match the
    contents is not an error here (describe-eif measures such a file too): see `crc_ok`.
    """
    try:
        with open(path, "rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            return read_eif_stream(stream, size)
    except OSError as err:
        raise EifUnreadable(f"cannot read EIF {os.fspath(path)}: {err.strerror or err}") from None


def read_eif_bytes(data: bytes) -> EifDescription:
    return read_eif_stream(io.BytesIO(data), len(data))


def read_eif_stream(stream: BinaryIO, size: int) -> EifDescription:
    raw_header = stream.read(HEADER_SIZE)
    header = EifHeader.unpack(raw_header)
    _check_table(header, size)
    crc = zlib.crc32(raw_header[:HEADER_CRC_SPAN])
    image, bootstrap, app = PcrHasher(), PcrHasher(), PcrHasher()
    sections: list[EifSection] = []
    seen: set[SectionType] = set()
    ramdisks = 0
    signature_data: bytes | None = None
    metadata_data: bytes | None = None
    pos = HEADER_SIZE
    while pos < size:
        index = len(sections)
        if index >= header.section_count:
            raise EifSectionTableMismatch(
                f"{size - pos} bytes follow the last of the {header.section_count} sections the header lists"
            )
        raw = stream.read(SECTION_HEADER_SIZE)
        section = SectionHeader.unpack(raw, offset=pos)
        if header.section_offsets[index] != pos or header.section_sizes[index] != section.size:
            raise EifSectionTableMismatch(
                f"section {index} ({section.section_type.label}) is at offset {pos} with {section.size} bytes,"
                f" the header says offset {header.section_offsets[index]} with {header.section_sizes[index]}"
            )
        kind = section.section_type
        if kind in _SINGLETONS and kind in seen:
            raise EifDuplicateSection(f"section {index}: a second {kind.label} section")
        seen.add(kind)
        crc = zlib.crc32(raw, crc)
        keep: list[bytes] | None = None
        if kind is SectionType.SIGNATURE or kind is SectionType.METADATA:
            limit = MAX_SIGNATURE_SIZE if kind is SectionType.SIGNATURE else MAX_METADATA_SIZE
            if section.size > limit:
                raise EifSectionTooLarge(f"{kind.label} section is {section.size} bytes, more than {limit}")
            keep = []
        targets: list[PcrHasher] = []
        if kind in (SectionType.KERNEL, SectionType.CMDLINE):
            targets = [image, bootstrap]
        elif kind is SectionType.RAMDISK:
            targets = [image, bootstrap if ramdisks == 0 else app]
            ramdisks += 1
        remaining = section.size
        while remaining:
            chunk = stream.read(min(CHUNK, remaining))
            if not chunk:
                raise EifTruncated(f"file ends inside the {kind.label} section at offset {pos}")
            remaining -= len(chunk)
            crc = zlib.crc32(chunk, crc)
            for hasher in targets:
                hasher.update(chunk)
            if keep is not None:
                keep.append(chunk)
        if kind is SectionType.SIGNATURE:
            signature_data = b"".join(keep or [])
        elif kind is SectionType.METADATA:
            metadata_data = b"".join(keep or [])
        sections.append(EifSection(index, kind, section.flags, pos, section.size))
        pos += SECTION_HEADER_SIZE + section.size
    if len(sections) != header.section_count:
        raise EifSectionTableMismatch(
            f"header lists {header.section_count} sections, the file holds {len(sections)}"
        )
    if SectionType.KERNEL not in seen:
        raise EifMissingKernel("image has no kernel section")
    if SectionType.CMDLINE not in seen:
        raise EifMissingSection("image has no cmdline section")
    signature = read_signature(signature_data) if signature_data is not None else None
    measurements = EifMeasurements(
        pcr0=image.pcr(),
        pcr1=bootstrap.pcr(),
        pcr2=app.pcr(),
        pcr8=signature.pcr8 if signature is not None else None,
    )
    check = signature_matches(signature, measurements.pcr0) if signature is not None else None
    metadata = parse_metadata(metadata_data) if metadata_data is not None else None
    log.debug("EIF measured: %d sections, %d ramdisks, crc %08x (header %08x)",
              len(sections), ramdisks, crc, header.crc32)
    return EifDescription(
        header=header,
        sections=tuple(sections),
        file_size=size,
        crc32=crc,
        measurements=measurements,
        signature=signature,
        signature_check=check,
        metadata=metadata,
    )


def _check_table(header: EifHeader, size: int) -> None:
    count = header.section_count
    if count > MAX_NUM_SECTIONS:
        raise EifTooManySections(f"header lists {count} sections, the format allows {MAX_NUM_SECTIONS}")
    if count == 0:
        raise EifMissingKernel("header lists no sections (an image needs at least a kernel)")
    spans = []
    for i in range(count):
        start, length = header.section_offsets[i], header.section_sizes[i]
        end = start + SECTION_HEADER_SIZE + length
        if start < HEADER_SIZE or end > size:
            raise EifSectionOutOfRange(
                f"section {i} spans bytes {start}..{end}, outside the sections area {HEADER_SIZE}..{size}"
            )
        spans.append((start, end, i))
    for i in range(count, MAX_NUM_SECTIONS):
        if header.section_offsets[i] or header.section_sizes[i]:
            raise EifSectionTableMismatch(
                f"section table entry {i} is set but the header lists only {count} sections"
            )
    spans.sort()
    for (_, prev_end, prev), (start, _, cur) in pairwise(spans):
        if start < prev_end:
            raise EifSectionOverlap(f"sections {prev} and {cur} overlap at offset {start}")


__all__ = ["EifDescription", "EifSection", "read_eif", "read_eif_bytes", "read_eif_stream"]
