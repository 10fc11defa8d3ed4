"""A stand-in EIF of an OCI image, measurable on any machine (`make eif-check`).

On AWS, `nitro-cli build-enclave` builds the EIF from the image with its own blobs:
a Linux kernel (bzImage), its command line, and a first ("bootstrap") ramdisk holding
AWS's `init` and the NSM driver `nsm.ko`; the image becomes the second ramdisk. Those
blobs ship with nitro-cli, not here, so this module puts clearly named stand-ins in
their place: a few fixed bytes that boot nothing. Everything about the EIF that
depends on the image is real: the application ramdisk is built from the image's
layers and configuration (parent.eif.ramdisk) and the file is written by
parent.eif.writer, so `hermetic measure-eif` measures it like any EIF:

* PCR1 covers only the stand-ins (kernel, cmdline, bootstrap ramdisk): it is a
  constant here, and on AWS it is fixed by the nitro-cli version;
* PCR2 covers the application ramdisk: any change to the image changes it;
* PCR0 covers both.

None of these equal the PCRs nitro-cli reports for the same image (other kernel
and init; another cpio writer and compressor). Usage:

    python -m parent.eif.standin OCI_LAYOUT OUT.eif [--ref NAME] [--gzip-level N]
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from pathlib import Path

from enclave.errors import ConfigError
from parent.eif.ramdisk import CpioWriter, OciImage, open_oci_image, write_app_ramdisk
from parent.eif.writer import default_metadata, write_eif

_NOTE = b"This is not a kernel: Hermetic's stand-in for nitro-cli's blob, so PCRs can be computed off AWS.\n"
STANDIN_KERNEL = b"HERMETIC STAND-IN KERNEL v1\n" + _NOTE
# nitro-cli's x86_64 cmdline, marked as a stand-in.
STANDIN_CMDLINE = (b"hermetic.stand-in=1 reboot=k panic=30 pci=off nomodules console=ttyS0 "
                   b"random.trust_cpu=on root=/dev/ram0")
STANDIN_INIT = (b"#!/hermetic-stand-in-init\n"
                b"# Stand-in for AWS's init (aws-nitro-enclaves-sdk-bootstrap): runs nothing.\n")
STANDIN_NSM_KO = b"HERMETIC STAND-IN nsm.ko: not a kernel module.\n"


def standin_bootstrap_ramdisk() -> bytes:
    """nitro-cli's bootstrap ramdisk layout (`dev/`, `init`, `nsm.ko`) with the stand-in files."""
    out = io.BytesIO()
    writer = CpioWriter(out, gzip_level=9)
    writer.add_dir("dev", mode=0o755)
    writer.add_file("init", STANDIN_INIT, mode=0o755)
    writer.add_file("nsm.ko", STANDIN_NSM_KO, mode=0o755)
    writer.close()
    return out.getvalue()


def build_standin_eif(image: OciImage, out: Path, *, gzip_level: int | None = 6) -> None:
    """Write the stand-in EIF of `image` to `out` (the app ramdisk goes through a temp file)."""
    metadata = json.loads(default_metadata(name="hermetic-enclave-stand-in", version=image.digest))
    metadata["DockerInfo"] = {"Id": image.digest, "Config": image.config.get("config") or {}}
    metadata["CustomMetadata"] = {"StandIn": "kernel, cmdline and bootstrap ramdisk are stand-ins"}
    with tempfile.NamedTemporaryFile(dir=out.parent, prefix=".app-ramdisk.", suffix=".cpio.gz") as app:
        write_app_ramdisk(image, app, gzip_level=gzip_level)  # type: ignore[arg-type]
        app.flush()
        write_eif(out, STANDIN_KERNEL, STANDIN_CMDLINE, [standin_bootstrap_ramdisk(), Path(app.name)],
                  metadata=json.dumps(metadata, sort_keys=True).encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parent.eif.standin", description=__doc__.split("\n\n")[0])
    parser.add_argument("layout", type=Path, help="OCI image layout (a directory with index.json)")
    parser.add_argument("out", type=Path, help="EIF to write")
    parser.add_argument("--ref", help="image name in the layout (org.opencontainers.image.ref.name)")
    parser.add_argument("--gzip-level", type=int, default=6, choices=range(0, 10), metavar="0-9",
                        help="gzip level of the application ramdisk (default 6)")
    args = parser.parse_args(argv)
    try:
        image = open_oci_image(args.layout, args.ref)
        build_standin_eif(image, args.out, gzip_level=args.gzip_level)
    except (ConfigError, OSError) as err:
        print(f"standin: {err}", file=sys.stderr)
        return 1
    print(f"standin: {args.out} from {image.digest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
