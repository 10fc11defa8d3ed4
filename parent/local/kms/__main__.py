"""`python -m parent.local.kms serve ...` is `hermetic kms-emulator serve ...`."""
from __future__ import annotations

import sys

from parent.cli import main

if __name__ == "__main__":
    sys.exit(main(["kms-emulator", *sys.argv[1:]]))
