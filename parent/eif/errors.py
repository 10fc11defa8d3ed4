"""Typed failures of the EIF reader: one class per way an image file can be wrong."""
from __future__ import annotations

from enclave.errors import HermeticError


class EifError(HermeticError):
    """An enclave image file (EIF) is malformed or cannot be measured."""


class EifUnreadable(EifError):
    """The EIF file cannot be opened or read."""


class EifTruncated(EifError):
    """The file ends before its header or a section does."""


class EifBadMagic(EifError):
    """The file does not start with the EIF magic ".eif"."""


class EifTooManySections(EifError):
    """The header claims more sections than the format's table holds (32)."""


class EifSectionOutOfRange(EifError):
    """A section in the header's table starts or ends outside the file."""


class EifSectionOverlap(EifError):
    """Two sections in the header's table overlap."""


class EifSectionTableMismatch(EifError):
    """The header's section table disagrees with the section headers in the file."""


class EifUnknownSectionType(EifError):
    """A section has the invalid type 0 or a type the format does not define."""


class EifMissingSection(EifError):
    """A section every bootable image has (kernel, cmdline) is absent."""


class EifMissingKernel(EifMissingSection):
    """The image has no kernel section."""


class EifDuplicateSection(EifError):
    """A section that may appear once (kernel, cmdline, signature, metadata) repeats."""


class EifSectionTooLarge(EifError):
    """A signature or metadata section is larger than any real one."""


class EifBadSignatureSection(EifError):
    """The signature section is not a CBOR array of PcrSignature with a PEM certificate."""


class EifSignatureInvalid(EifBadSignatureSection):
    """The PCR0 signature does not verify with the signing certificate's key."""


class EifBadMetadata(EifError):
    """The metadata section is not the JSON object the format defines."""
