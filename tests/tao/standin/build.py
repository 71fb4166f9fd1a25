"""Build the local TAO stand-in image: a busybox rootfs + tao_standin.sh as `ssd` and `yolo_v3`.

    python tests/tao/standin/build.py [--tag hackathon-tao-standin:test]

Needs a statically linked busybox on the host (Debian/Ubuntu: apt-get install busybox-static) and a
docker engine. The image is ~2 MB and rebuilt only when the script or busybox changes (label check).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "tao_standin.sh"
DEFAULT_TAG = "hackathon-tao-standin:test"
NETWORKS = ("ssd", "yolo_v3", "dssd")
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox", "/usr/lib/busybox/busybox-static")
FIX_BUSYBOX = "sudo apt-get install -y busybox-static   (a statically linked busybox)"


class StandinError(RuntimeError):
    pass


def find_static_busybox() -> Path:
    for cand in (os.environ.get("BUSYBOX"), *BUSYBOX_CANDIDATES, shutil.which("busybox")):
        if cand and Path(cand).is_file() and _is_static(Path(cand)):
            return Path(cand)
    raise StandinError(f"No statically linked busybox found (looked at {', '.join(BUSYBOX_CANDIDATES)}). Fix: {FIX_BUSYBOX}")


def _is_static(path: Path) -> bool:
    """An ELF without a PT_INTERP program header runs in an empty rootfs."""
    data = path.read_bytes()[:1 << 16]
    if data[:4] != b"\x7fELF" or data[4] != 2:  # 64-bit only
        return False
    phoff = int.from_bytes(data[0x20:0x28], "little")
    phentsize = int.from_bytes(data[0x36:0x38], "little")
    phnum = int.from_bytes(data[0x38:0x3A], "little")
    for i in range(phnum):
        off = phoff + i * phentsize
        if int.from_bytes(data[off:off + 4], "little") == 3:  # PT_INTERP
            return False
    return True


def _applets(busybox: Path) -> list[str]:
    out = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True).stdout
    return [a for a in out.split() if a and a != "busybox"]


def content_hash(busybox: Path) -> str:
    h = hashlib.sha256(SCRIPT.read_bytes())
    h.update(hashlib.sha256(busybox.read_bytes()).digest())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()[:16]


def _add(tar: tarfile.TarFile, name: str, data: bytes | None = None, mode: int = 0o755, link: str | None = None,
         directory: bool = False) -> None:
    info = tarfile.TarInfo(name)
    info.mode = mode
    if directory:
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    elif link is not None:
        info.type = tarfile.SYMTYPE
        info.linkname = link
        tar.addfile(info)
    else:
        info.size = len(data or b"")
        tar.addfile(info, io.BytesIO(data or b""))


def build_context(busybox: Path, digest: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        dockerfile = (f"FROM scratch\nCOPY rootfs/ /\nENV PATH=/usr/local/bin:/bin\n"
                      f"LABEL hackathon.tao-standin={digest}\nCMD [\"sh\"]\n").encode()
        _add(tar, "Dockerfile", dockerfile, 0o644)
        for d in ("rootfs", "rootfs/bin", "rootfs/usr", "rootfs/usr/local", "rootfs/usr/local/bin"):
            _add(tar, d, directory=True)
        _add(tar, "rootfs/tmp", directory=True, mode=0o1777)
        _add(tar, "rootfs/bin/busybox", busybox.read_bytes())
        for applet in _applets(busybox):
            _add(tar, f"rootfs/bin/{applet}", link="busybox")
        _add(tar, "rootfs/usr/local/bin/tao_standin.sh", SCRIPT.read_bytes())
        for net in NETWORKS:
            _add(tar, f"rootfs/usr/local/bin/{net}", link="tao_standin.sh")
    return buf.getvalue()


def build(tag: str = DEFAULT_TAG, client=None, force: bool = False, echo=print) -> str:
    """Build (or reuse) the stand-in image; returns its tag."""
    import docker

    busybox = find_static_busybox()
    client = client or docker.from_env()
    digest = content_hash(busybox)
    if not force:
        try:
            if client.images.get(tag).labels.get("hackathon.tao-standin") == digest:
                return tag
        except docker.errors.ImageNotFound:
            pass
    echo(f"building {tag} from {busybox} + {SCRIPT.name}")
    client.images.build(fileobj=io.BytesIO(build_context(busybox, digest)), custom_context=True, tag=tag, rm=True)
    return tag


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tag", default=DEFAULT_TAG)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    try:
        print(build(args.tag, force=args.force))
    except StandinError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
