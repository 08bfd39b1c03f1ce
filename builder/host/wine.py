"""Running Windows builds of the agent under wine, on this host.

glib aborts when it cannot read the console code page, so programs run under a pty. Each use
gets a fresh prefix; teardown kills our processes by pid, then the prefix's wineserver.
"""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from builder.config import settings
from builder.errors import ArtifactError, HostToolError

WINE_CANDIDATES = ("/usr/lib/wine/wine64", "wine64", "wine")


def wine_binary() -> str:
    configured = settings.current().wine
    for candidate in (configured,) if configured else WINE_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    raise HostToolError(
        "wine is not installed: it is needed to run qemu-ga.exe --version before success",
        hint="apt-get install --no-install-recommends wine wine64 "
        "(or `scripts/setup.sh --windows`)",
    )


def wineserver_binary(wine: str) -> str:
    sibling = Path(wine).with_name("wineserver")
    return str(sibling) if sibling.exists() else (shutil.which("wineserver") or "wineserver")


@dataclass
class WinePrefix:
    path: Path
    wine: str

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "WINEPREFIX": str(self.path),
            "WINEDEBUG": "-all",
            "WINEDLLOVERRIDES": "mscoree,mshtml=",  # no Mono or Gecko install prompts
        }

    @property
    def drive_c(self) -> Path:
        return self.path / "drive_c"

    def run(
        self, args: list[str], timeout: float = 120.0, cwd: Path | None = None
    ) -> tuple[int, str]:
        """Run a Windows program under a pty; return its exit code and its output."""
        return run_in_pty([self.wine, *args], env=self.env, cwd=cwd, timeout=timeout)

    def set_com_port(self, name: str, device: str) -> None:
        code, output = self.run(
            [
                "reg",
                "add",
                r"HKLM\Software\Wine\Ports",
                "/v",
                name,
                "/t",
                "REG_SZ",
                "/d",
                device,
                "/f",
            ],
        )
        if code != 0:
            raise ArtifactError(f"wine: could not map {name} to {device}: {output[-300:]}")
        # Wine's mount manager reads the Ports key when the prefix starts: restart it.
        self.stop()

    def stop(self) -> None:
        """Kill this prefix's wineserver and every Windows process in it."""
        self._wineserver("-k", timeout=30)

    def create(self, attempts: int = 2) -> None:
        """Make the prefix before any program runs in it.

        Left to the first program, wine builds the prefix in the background and, on a loaded
        host, can start the program before system32 is filled ("could not load kernel32.dll").
        So: wineboot (which returns once the prefix is made), check, and try once more.
        """
        # A wineserver left by a deleted prefix whose inode this directory reuses would answer
        # for it: make sure none does.
        self.stop()
        output = ""
        for _ in range(attempts):
            code, output = run_in_pty(
                [self.wine, "wineboot", "--init"], env=self.env, timeout=180.0
            )
            if code == 0 and (self.drive_c / "windows" / "system32" / "kernel32.dll").exists():
                return
            self.stop()
            shutil.rmtree(self.path, ignore_errors=True)
            self.path.mkdir()
        raise ArtifactError(
            f"wine could not create a prefix in {self.path}: {output.strip()[-300:]}",
            hint="check that `wine64 wineboot --init` works on this host (WINEPREFIX=/tmp/x)",
        )

    def wait(self) -> None:
        """Wait until this prefix's wineserver has exited (all its processes are done)."""
        self._wineserver("-w", timeout=120)

    def _wineserver(self, flag: str, timeout: float) -> None:
        with suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                [wineserver_binary(self.wine), flag],
                env=self.env,
                timeout=timeout,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            )


@contextmanager
def prefix() -> Iterator[WinePrefix]:
    wine = wine_binary()
    path = Path(tempfile.mkdtemp(prefix="qga-wine-"))
    box = WinePrefix(path, wine)
    try:
        box.create()
        yield box
    finally:
        box.stop()
        box.wait()  # a lingering server must not outlive its prefix directory
        shutil.rmtree(path, ignore_errors=True)


def run_in_pty(
    argv: list[str], *, env: dict[str, str], cwd: Path | None = None, timeout: float = 120.0
) -> tuple[int, str]:
    master, slave = pty.openpty()
    process = subprocess.Popen(
        argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd, start_new_session=True
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ArtifactError(
                    f"{Path(argv[1]).name if len(argv) > 1 else argv[0]} under "
                    f"wine did not finish within {timeout:.0f} s"
                )
            ready, _, _ = select.select([master], [], [], min(remaining, 0.5))
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer of the pty is gone
                    data = b""
                if not data:
                    break
                chunks.append(data)
            elif process.poll() is not None:
                break
        code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        os.close(master)
    return code, plain_text(b"".join(chunks).decode("utf-8", errors="replace"))


_CSI = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")


def plain_text(screen: str) -> str:
    """wine's console draws on the pty with escape sequences (cursor moves instead of spaces):
    keep the characters, turn cursor-forward into spaces, drop the rest."""

    def replace(match: re.Match[str]) -> str:
        if match.group(2) == "C":
            return " " * int(match.group(1) or "1")
        return ""

    return _CSI.sub(replace, screen).replace("\r\n", "\n")
