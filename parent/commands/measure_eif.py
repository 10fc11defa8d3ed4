"""`hermetic measure-eif`: check an EIF and compute its PCRs like `nitro-cli describe-eif`.

Exit status: 0 measured, 1 malformed file, a CRC32 that does not match the contents
or a signature that does not cover the image (one-line reason on stderr; for the last
two the description, with "CheckCRC"/"SignatureCheck" false, is still printed), 2 usage error.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from parent.eif import read_eif


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "measure-eif",
        help="check an enclave image file and compute its PCRs",
        description=(
            "Read an EIF (header, section table, CRC32) and compute PCR0/1/2, and PCR8 for "
            "a signed image, exactly as `nitro-cli describe-eif` does, without nitro-cli."
        ),
    )
    parser.add_argument("eif", metavar="FILE.eif", type=Path, help="enclave image file")
    parser.add_argument("--json", action="store_true",
                        help="print describe-eif's JSON (Measurements, IsSigned, CheckCRC, ...) plus Header")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    description = read_eif(args.eif)
    if args.json:
        print(json.dumps(description.describe(), indent=2))
    else:
        header = description.header
        crc = (f"CRC32 {description.crc32:08x} OK" if description.crc_ok else
               f"CRC32 MISMATCH (header {header.crc32:08x}, contents {description.crc32:08x})")
        print(f"{args.eif}: EIF version {header.version}, {header.architecture}, "
              f"{description.file_size} bytes, {crc}")
        if description.metadata is not None:
            meta = description.metadata
            print(f"image {meta.image_name} {meta.image_version}, built {meta.build['BuildTime']} "
                  f"by {meta.build['BuildTool']} {meta.build['BuildToolVersion']}")
        print(f"default memory {header.default_mem} bytes, {header.default_cpus} CPUs")
        for section in description.sections:
            print(f"  section {section.index}: {section.section_type.label:<9} "
                  f"offset {section.offset:>10}  size {section.size:>10}")
        m = description.measurements
        print(f"PCR0: {m.pcr0.hex()}")
        print(f"PCR1: {m.pcr1.hex()}")
        print(f"PCR2: {m.pcr2.hex()}")
        if m.pcr8 is not None:
            print(f"PCR8: {m.pcr8.hex()}")
            subject = description.signature.certificate.subject.rfc4514_string() if description.signature else ""
            verdict = "covers this image's PCR0" if description.signature_check else "DOES NOT cover PCR0"
            print(f"signed by {subject}; signature {verdict}")
    if not description.crc_ok:
        print(f"hermetic: error: CRC32 mismatch: header says {description.header.crc32:08x}, "
              f"contents give {description.crc32:08x}", file=sys.stderr)
        return 1
    if description.signature_check is False:
        print("hermetic: error: the EIF's signature does not sign this image's PCR0", file=sys.stderr)
        return 1
    return 0
