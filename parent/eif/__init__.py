"""Enclave Image Files: a pure-Python reader that measures PCRs like `nitro-cli describe-eif`."""
from __future__ import annotations

from parent.eif.errors import EifError
from parent.eif.format import EIF_MAGIC, HEADER_SIZE, MAX_NUM_SECTIONS, SECTION_HEADER_SIZE, SectionType
from parent.eif.measure import PCR2_EMPTY, EifMeasurements
from parent.eif.reader import EifDescription, EifSection, read_eif, read_eif_bytes

__all__ = [
    "EIF_MAGIC",
    "HEADER_SIZE",
    "MAX_NUM_SECTIONS",
    "PCR2_EMPTY",
    "SECTION_HEADER_SIZE",
    "EifDescription",
    "EifError",
    "EifMeasurements",
    "EifSection",
    "SectionType",
    "read_eif",
    "read_eif_bytes",
]
