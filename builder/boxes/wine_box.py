"""Windows programs run under wine in a box: a container of the tool's own, never on the host.

wine is no sandbox (its Z: drive is the whole file system, and it runs with the caller's
environment and network). So the programs a build made are copied into a hardened container
(Debian's wine, pinned like every image, an unprivileged user, no network, every capability
dropped, nothing of the host mounted), and run there under a pseudo-terminal (`script`):
glib aborts without a console.
"""

from __future__ import annotations

import io
import re
import shlex
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from builder.boxes.tool_box import ASSETS, TRIXIE, ToolBox
from builder.config.layout import BUILD_UID
from builder.errors import ArtifactError
from builder.host.cache import Cache
from builder.log import StepOutput
from builder.run_context import Container, ContainerEngine

BOX = ToolBox("wine", ASSETS / "Dockerfile.wine", ("wine", "wine64", "socat"), memory="4g")
BASE = TRIXIE
image_plan = BOX.image_plan
PREFIX = "/home/builder/.wine"
DRIVE_C = f"{PREFIX}/drive_c"
WORK = "/work"


@dataclass
class WineBox:
    container: Container

    def run(self, argv: list[str], *, cwd: str = WORK) -> tuple[int, str]:
        """Run a program under a pty in the box; return its exit code and what it printed."""
        lines: list[str] = []
        command = f"cd {shlex.quote(cwd)} && exec {shlex.join(argv)}"
        code = self.container.run(["script", "-qefc", command, "/dev/null"], on_line=lines.append)
        return code, plain_text("\n".join(lines))

    def put_directory(self, directory: Path, dest: str) -> None:
        """Copy a host directory's regular files into the box (dest must exist)."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for path in sorted(directory.rglob("*")):
                if path.is_file() and not path.is_symlink():
                    info = tarfile.TarInfo(str(path.relative_to(directory)))
                    info.size = path.stat().st_size
                    info.mode = 0o755
                    info.uid = info.gid = BUILD_UID
                    with path.open("rb") as handle:
                        tar.addfile(info, handle)
        buffer.seek(0)
        self.container.put_archive(dest, buffer)

    def mkdir(self, path: str) -> None:
        code, printed = self.run(["mkdir", "-p", path], cwd="/")
        if code != 0:
            raise ArtifactError(f"wine box: cannot create {path}: {printed.strip()[-200:]}")


@contextmanager
def wine_box(engine: ContainerEngine, cache: Cache, output: StepOutput) -> Iterator[WineBox]:
    """The wine image (made if missing, reused by content hash), a fresh hardened container
    from it, and a wine prefix made in it before anything runs."""
    with BOX.open(engine, cache, output) as container:
        box = WineBox(container)
        code, printed = box.run(["wineboot", "--init"])
        check, _ = box.run(["test", "-e", f"{DRIVE_C}/windows/system32/kernel32.dll"])
        if code != 0 or check != 0:
            raise ArtifactError(
                f"wine could not create a prefix in the wine box: {printed.strip()[-300:]}",
                hint="the wine image's log is in the check stage's log",
            )
        yield box


_CSI = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")
_OSC = re.compile(r"\x1b\][^\x07]*\x07")


def plain_text(screen: str) -> str:
    """wine's console draws with escape sequences (cursor moves instead of spaces): keep the
    characters, turn cursor-forward into spaces, drop the rest."""

    def replace(match: re.Match[str]) -> str:
        if match.group(2) == "C":
            return " " * min(int(match.group(1) or "1"), 200)
        return ""

    return _CSI.sub(replace, _OSC.sub("", screen)).replace("\r\n", "\n").replace("\r", "")
