"""The Enclave Image File (EIF) layout, as aws-nitro-enclaves-image-format defines it.

All integers are big-endian (src/defs/mod.rs):

    EifHeader (548 bytes)
      magic ".eif" | version u16 | flags u16 | default_mem u64 | default_cpus u64 |
      reserved u16 | section_cnt u16 | section_offsets [u64; 32] | section_sizes [u64; 32] |
      unused u32 | eif_crc32 u32
    then, back to back, one per section:
    EifSectionHeader (12 bytes)
      section_type u16 | flags u16 | section_size u64
    followed by `section_size` bytes of data.

`section_offsets[i]` is where section i's 12-byte header starts; `section_sizes[i]`
is the size of its data. nitro-cli writes kernel, cmdline, metadata, the ramdisks
and (when signed) the signature, in that order.
"""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from parent.eif.errors import EifBadMagic, EifTruncated, EifUnknownSectionType

EIF_MAGIC = b".eif"
MAX_NUM_SECTIONS = 32
# V2 added the CRC, V3 the signature section, V4 the metadata section.
CURRENT_VERSION = 4
# Bit 0 of the header flags: set for aarch64 images, clear for x86_64.
EIF_HDR_ARCH_ARM64 = 0x1

_HEADER = struct.Struct(f">4sHHQQHH{MAX_NUM_SECTIONS}Q{MAX_NUM_SECTIONS}QII")
_SECTION = struct.Struct(">HHQ")
HEADER_SIZE = _HEADER.size  # 548
SECTION_HEADER_SIZE = _SECTION.size  # 12
# The CRC covers the header up to, not including, its last field (the CRC itself).
HEADER_CRC_SPAN = HEADER_SIZE - 4


class SectionType(enum.IntEnum):
    INVALID = 0
    KERNEL = 1
    CMDLINE = 2
    RAMDISK = 3
    SIGNATURE = 4
    METADATA = 5

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class EifHeader:
    magic: bytes
    version: int
    flags: int
    default_mem: int
    default_cpus: int
    reserved: int
    section_count: int
    section_offsets: tuple[int, ...]
    section_sizes: tuple[int, ...]
    unused: int
    crc32: int

    @property
    def architecture(self) -> str:
        return "aarch64" if self.flags & EIF_HDR_ARCH_ARM64 else "x86_64"

    def pack(self) -> bytes:
        if len(self.section_offsets) != MAX_NUM_SECTIONS or len(self.section_sizes) != MAX_NUM_SECTIONS:
            raise ValueError(f"the section table has exactly {MAX_NUM_SECTIONS} entries")
        return _HEADER.pack(
            self.magic, self.version, self.flags, self.default_mem, self.default_cpus,
            self.reserved, self.section_count, *self.section_offsets, *self.section_sizes,
            self.unused, self.crc32,
        )

    @classmethod
    def unpack(cls, data: bytes) -> EifHeader:
        # The magic first: a short file of some other kind is "not an EIF", not "truncated".
        if data[:4] != EIF_MAGIC[:len(data[:4])]:
            raise EifBadMagic(f"not an EIF file: magic is {data[:4]!r}, expected {EIF_MAGIC!r}")
        if len(data) < HEADER_SIZE:
            raise EifTruncated(f"file is {len(data)} bytes, shorter than the {HEADER_SIZE}-byte EIF header")
        fields = _HEADER.unpack_from(data)
        n = MAX_NUM_SECTIONS
        return cls(
            magic=fields[0],
            version=fields[1],
            flags=fields[2],
            default_mem=fields[3],
            default_cpus=fields[4],
            reserved=fields[5],
            section_count=fields[6],
            section_offsets=tuple(fields[7:7 + n]),
            section_sizes=tuple(fields[7 + n:7 + 2 * n]),
            unused=fields[7 + 2 * n],
            crc32=fields[8 + 2 * n],
        )


@dataclass(frozen=True)
class SectionHeader:
    section_type: SectionType
    flags: int
    size: int

    def pack(self) -> bytes:
        return _SECTION.pack(int(self.section_type), self.flags, self.size)

    @classmethod
    def unpack(cls, data: bytes, *, offset: int) -> SectionHeader:
        """Parse the 12 bytes at file offset `offset` (used only in messages)."""
        if len(data) < SECTION_HEADER_SIZE:
            raise EifTruncated(f"file ends inside the section header at offset {offset}")
        raw_type, flags, size = _SECTION.unpack_from(data)
        try:
            section_type = SectionType(raw_type)
        except ValueError:
            raise EifUnknownSectionType(
                f"section at offset {offset} has unknown type {raw_type} (defined: 0-5)"
            ) from None
        if section_type is SectionType.INVALID:
            raise EifUnknownSectionType(f"section at offset {offset} has the invalid type 0")
        return cls(section_type, flags, size)
