"""The booted guest of `vm-test`, without booting: the disk's cache entry is written whole or
not at all (a fake container behind the engine's interface), what the guest is given to run,
and how its console is read."""

from __future__ import annotations

import io
import subprocess
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from builder.agent import guest_scripts, guest_test
from builder.caches import guest_image
from builder.errors import ImageError
from builder.formats.checksums import format_sha256sums, sha256_bytes
from builder.host import guest_vm
from builder.log import StepOutput

FILES = {"disk.img": b"\0" * 4096, "vmlinuz": b"kernel", "initrd.img": b"initrd"}
FILES["packages.txt"] = b"systemd\t257.13-1~deb13u1\nlinux-image-6.12.117+deb13-amd64\t6.12\n"


class Box:
    def __init__(self, code: int, tampered: bool = False) -> None:
        self.code, self.tampered, self.commands = code, tampered, []

    def run(self, argv: list[str], *, on_line: Any, **_: Any) -> int:
        self.commands.append(argv)
        on_line("mkfs.ext4: No space left on device" if self.code else "made")
        return self.code

    def get_archive(self, path: str) -> Iterator[bytes]:
        files = dict(FILES)
        files["SHA256SUMS"] = format_sha256sums(
            {name: sha256_bytes(data) for name, data in FILES.items()}
        ).encode()
        if self.tampered:
            files["vmlinuz"] = b"another kernel"
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(f"out/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        yield buffer.getvalue()


class Engine:
    def __init__(self, box: Box) -> None:
        self.box, self.settings = box, {}

    @contextmanager
    def container(self, image: str, **settings: Any) -> Iterator[Box]:
        self.settings = settings
        yield self.box


def _output(tmp_path: Path) -> StepOutput:
    return StepOutput("vm-test", None, tmp_path / "step.log")


def test_a_disk_is_cached_whole_with_one_capability(tmp_path: Path) -> None:
    engine = Engine(Box(0))
    entry = tmp_path / "systemd-abc"
    guest_image._make(engine, "sha256:abc", entry, _output(tmp_path))  # type: ignore[arg-type]
    assert sorted(p.name for p in entry.iterdir()) == sorted([*FILES, "SHA256SUMS", ".complete"])
    assert (entry / ".complete").read_text().strip() == "sha256:abc"
    assert engine.settings["cap_add"] == ("DAC_READ_SEARCH",)
    assert engine.settings["network"] is False
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("box", [Box(1), Box(0, tampered=True)], ids=["fails", "tampered"])
def test_a_failed_disk_leaves_the_cache_as_it_was(tmp_path: Path, box: Box) -> None:
    entry = tmp_path / "systemd-abc"
    entry.mkdir()
    (entry / "disk.img").write_bytes(b"the one before")
    with pytest.raises(ImageError, match="guest disk"):
        guest_image._make(Engine(box), "sha256:abc", entry, _output(tmp_path))  # type: ignore[arg-type]
    assert (entry / "disk.img").read_bytes() == b"the one before"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["systemd-abc"]  # no staging left


def test_the_payload_is_a_tar_a_disk_can_hold(tmp_path: Path) -> None:
    data = guest_vm.payload_tar({"scenario.sh": b"say hi\n", "v1.deb": b"!<arch>\n"})
    assert len(data) % 512 == 0
    (tmp_path / "p.tar").write_bytes(data)
    listed = subprocess.run(["tar", "-tf", str(tmp_path / "p.tar")], capture_output=True, text=True)
    assert listed.stdout.split() == ["scenario.sh", "v1.deb"]


@pytest.mark.parametrize("name", guest_test.SCENARIOS)
def test_every_scenario_script_is_valid_shell_and_phased(tmp_path: Path, name: str) -> None:
    script = guest_scripts.scenario_script(name)
    for text in (script, guest_scripts.LIB, guest_scripts.FINISH.get(name, "")):
        path = tmp_path / "s.sh"
        path.write_text(text)
        assert subprocess.run(["sh", "-n", str(path)]).returncode == 0, text
    assert 'if [ "$(phase)" = 0 ]' in script and "say booted again" in script


def test_console_markers_are_read_in_order(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    console.write_bytes(
        b"[ 1.0] kernel noise\n\x1b[?7hQGA-SCENARIO hello kernel=6.12\n"
        b"QGA-SCENARIO diff > /etc/qemu\nQGA-SCENARIO finished\n\xff\n"
    )
    guest = guest_vm.RunningGuest(process=None, socket=tmp_path, console=console, started=0)  # type: ignore[arg-type]
    assert guest.markers() == [("hello", "kernel=6.12"), ("diff", "> /etc/qemu"), ("finished", "")]


def test_a_marker_printed_just_before_poweroff_is_read(tmp_path: Path) -> None:
    """qemu may end between one read of the console and the next: the last read comes after
    the guest is known to be gone."""
    console = tmp_path / "console.log"
    console.write_text("QGA-SCENARIO hello\n")

    class Ending:
        def poll(self) -> int:
            console.write_text("QGA-SCENARIO hello\nQGA-SCENARIO finished\n")  # then it ends
            return 0

    guest = guest_vm.RunningGuest(process=Ending(), socket=tmp_path, console=console, started=0)  # type: ignore[arg-type]
    assert guest.wait_for("finished", 5) == ""
    assert guest.wait_for("never", 5) is None
