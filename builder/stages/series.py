"""QEMU series: which version a source is, which of our patch sets serves it, and whether each
patch of that set applies (tried on a scratch copy of the files it touches, on the host: patch
only reads and writes text, nothing of the source runs).

Our patch sets live in `patches/qemu-X.Y/`, applied in file-name order.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from builder.errors import HostToolError, InputError, PatchError
from builder.formats.checksums import sha256_file
from builder.stages.patches import describe_failure

PATCHES_DIR = Path(__file__).resolve().parent.parent.parent / "patches"
_VERSION = re.compile(r"^(?P<major>\d{1,3})\.(?P<minor>\d{1,3})(\.\d{1,4})?(-rc\d+)?$")
_TOUCHED = re.compile(r"^\+\+\+ (?:b/)?(?P<path>[^\t\n]+)")
MAX_VERSION_BYTES = 64


@dataclass(frozen=True)
class PatchTrial:
    patch: Path
    sha256: str
    applies: bool
    detail: str


def series_of(version: str) -> str:
    match = _VERSION.match(version.strip())
    if not match:
        raise InputError(f"source: VERSION says {version.strip()[:40]!r}, not a QEMU version")
    return f"{int(match['major'])}.{int(match['minor'])}"


def supported_series(patches_dir: Path = PATCHES_DIR) -> list[str]:
    found = [p.name.removeprefix("qemu-") for p in patches_dir.glob("qemu-*") if p.is_dir()]
    return sorted(found, key=lambda s: tuple(int(x) for x in s.split(".")))


def patch_set(series: str, patches_dir: Path = PATCHES_DIR) -> list[Path]:
    directory = patches_dir / f"qemu-{series}"
    patches = sorted(directory.glob("*.patch")) if directory.is_dir() else []
    if not patches:
        raise PatchError(
            f"QEMU {series} has no patch set of ours (supported: "
            f"{', '.join(supported_series(patches_dir))})",
            hint=f"write and test one in {directory}/ (see README: Adding a QEMU series)",
        )
    return patches


def read_version(source: Path) -> str:
    """VERSION of a source tree, or of a tarball whose members sit under one top directory."""
    if source.is_dir():
        path = source / "VERSION"
        if not path.is_file() or path.is_symlink():
            raise InputError(f"source: {source} has no VERSION file; is it a QEMU source tree?")
        return path.read_text(errors="replace")[:MAX_VERSION_BYTES].strip()
    try:
        with tarfile.open(source, mode="r:*") as tar:
            for member in tar:
                parts = member.name.removeprefix("./").split("/")
                if parts[-1] == "VERSION" and len(parts) <= 2 and member.isfile():
                    data = tar.extractfile(member).read(MAX_VERSION_BYTES)  # type: ignore[union-attr]
                    return data.decode(errors="replace").strip()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(f"source: {source} is not a readable tarball: {exc}") from None
    raise InputError(f"source: {source} has no top-level VERSION; is it a QEMU source?")


def touched_files(patch: Path) -> list[str]:
    paths = []
    for line in patch.read_text(errors="replace").splitlines():
        match = _TOUCHED.match(line)
        if match and match["path"] != "/dev/null":
            path = match["path"]
            if path.startswith("/") or ".." in path.split("/"):
                raise InputError(f"{patch.name}: it names {path!r}, outside the source")
            paths.append(path)
    return paths


def try_patches(source: Path, patches: list[Path]) -> list[PatchTrial]:
    """Apply the series in order to a scratch copy of the files it touches; say what happens."""
    if shutil.which("patch") is None:
        raise HostToolError(
            "`patches check` needs patch on this host", hint="apt-get install patch"
        )
    wanted = {path for patch in patches for path in touched_files(patch)}
    trials = []
    with tempfile.TemporaryDirectory(prefix="qga-patches-") as scratch:
        root = Path(scratch)
        _copy_files(source, wanted, root)
        for patch in patches:
            process = subprocess.run(
                ["patch", "-p1", "--forward", "--batch", "--no-backup-if-mismatch", "-i", patch],
                cwd=root,
                capture_output=True,
                text=True,
                check=False,
            )
            lines = (process.stdout + process.stderr).splitlines()
            applies = process.returncode == 0
            detail = "applies" if applies else describe_failure(lines)
            trials.append(PatchTrial(patch, sha256_file(patch), applies, detail))
    return trials


def _copy_files(source: Path, wanted: set[str], dest: Path) -> None:
    if source.is_dir():
        for name in wanted:
            path = source / name
            if path.is_file() and not path.is_symlink():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dest / name)
        return
    with tarfile.open(source, mode="r:*") as tar:
        for member in tar:
            name = member.name.removeprefix("./").split("/", 1)[-1]
            if name in wanted and member.isfile():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                (dest / name).write_bytes(tar.extractfile(member).read())  # type: ignore[union-attr]
