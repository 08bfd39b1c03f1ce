"""The fake engine of the orchestrator's tests: the engine and container Protocols, with files
in a dict and each step answered by the tag it is run with (`Command.step`), never by its
script's text. Only for the orchestrator's own control flow; integration tests use Docker."""

from __future__ import annotations

import hashlib
import io
import re
import shlex
import struct
import tarfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import IO, Any

from builder.boxes.container_commands import LINK_MAP, PATHS_MARK
from builder.engine import ImageRecord
from builder.log import LineSink

QEMU_VERSION = "10.0.13"


def fake_static_elf(machine: int = 62) -> bytes:
    """An ELF64 header with no program or section headers: static and stripped (x86-64, or
    another machine: 183 is AArch64)."""
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header = struct.pack("<HHIQQQIHHHHHH", 3, machine, 1, 0, 0, 0, 0, 64, 56, 0, 64, 0, 0)
    return ident + header


AGENT = fake_static_elf()
# What the fake link took, and who owns it (the inventory lists these packages too).
FAKE_LINK_MAP = """Archive member included to satisfy reference by file (symbol)

/usr/lib/x86_64-linux-gnu/libglib-2.0.a(gmain.c.o)
                              qga/qemu-ga.p/main.c.o (g_main_loop_new)
/usr/lib/x86_64-linux-gnu/libc.a(printf.o)
                              qga/qemu-ga.p/main.c.o (printf)
libqemuutil.a(util_osdep.c.o)
                              qga/qemu-ga.p/main.c.o (qemu_open)

LOAD /usr/lib/x86_64-linux-gnu/crt1.o
LOAD qga/qemu-ga.p/main.c.o
LOAD /usr/lib/x86_64-linux-gnu/libglib-2.0.a
"""
OWNERS = {
    "libglib2.0-dev": ("2.84.4-3~deb13u2", "glib2.0"),
    "libc6-dev": ("2.41-12", "glibc"),
}


def _owner(path: str) -> str:
    """dpkg -S's line for a file the fake link took."""
    package = "libglib2.0-dev" if "glib" in path else "libc6-dev"
    return f"S\t{package}:amd64: {path}"


class FakeContainer:
    """Files in a dict; the commands the stages send are recognised and answered."""

    def __init__(self, engine: FakeEngine, image: str) -> None:
        self.engine = engine
        self.id = f"fake-{len(engine.created)}"
        self.name = self.id
        self.image = image
        self.files: dict[str, bytes] = {}

    def _event(self, *what: object) -> None:
        self.engine.events.append(what)

    def put_archive(self, dest: str, archive: IO[bytes] | bytes) -> None:
        data = archive if isinstance(archive, bytes) else archive.read()
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar:
                if member.isfile():
                    content = tar.extractfile(member).read()  # type: ignore[union-attr]
                    self.files[f"{dest}/{member.name}"] = content
        self._event("put", dest)

    def put_files(self, dest: str, files: Mapping[str, bytes], *, uid: int, gid: int) -> None:
        for name, data in files.items():
            self.files[f"{dest}/{name}"] = data
        self._event("put", dest)

    def get_archive(self, path: str) -> Iterator[bytes]:
        self._event("get", path)
        parent = path.rsplit("/", 1)[0]
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for name, data in sorted(self.files.items()):
                if name == path or name.startswith(path + "/"):
                    info = tarfile.TarInfo(name[len(parent) + 1 :])
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        return iter([buffer.getvalue()])

    def run(
        self,
        command: list[str],
        *,
        on_line: LineSink,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        user: str | None = None,
        step: str = "",
    ) -> int:
        argv = command[4:] if command[:2] == ["sh", "-c"] else command  # the umask wrapper
        kind, lines, code = self._answer(step, argv)
        self._event("run", kind, dict(env or {}))
        self.engine.commands.append((kind, list(argv)))
        for line in lines:
            on_line(line)
        return self.engine.exit_codes.get(kind, code)

    def _answer(self, step: str, argv: list[str]) -> tuple[str, list[str], int]:
        """What the step named `step` prints and returns; the script's text is not read (only
        the operands a real step would act on: the patch file, the install's destinations)."""
        if step == "ccache-probe":
            return step, ["ccache version 4.11.3"], 0
        if step == "ccache-stats":
            return step, ["direct_cache_hit\t40", "preprocessed_cache_hit\t2", "cache_miss\t3"], 0
        if step == "ccache-zero":
            return "ccache-stats", [], 0
        if step == "inventory":
            lines = ["distribution Debian GNU/Linux 13 (trixie)", "format deb"]
            packages = [f"{name}\t{version}\tamd64" for name, (version, _) in OWNERS.items()]
            return step, [*lines, "gcc\t14.2.0-19\tamd64", *packages], 0
        if step.startswith("configured-"):
            return self._configured_tree(step, argv[-1])
        if step == "agent-paths":  # `qemu-ga -D -F` where built and from a copy elsewhere
            settings = ["statedir=/var/run", "pidfile=/var/run/qemu-ga.pid"]
            settings.append("fsfreeze-hook=/etc/qemu/fsfreeze-hook")
            return step, [PATHS_MARK + "a", *settings, PATHS_MARK + "b", *settings], 0
        if step == "prepare":
            return step, [], 0
        if step == "unpack":
            archive = next(name for name in self.files if "/in/" in name)
            self.engine.unpacked = self.files[archive]
            return step, ["unpacked 3 files", QEMU_VERSION], 0
        if step == "patch":
            patch = self.files[argv[-1]]
            self.engine.patched.append(patch)
            if b"FAIL" in patch:
                return step, ["patching file qga/commands.c", "Hunk #2 FAILED at 10."], 1
            return step, [f"patching file qga/commands.c ({len(patch)} bytes)"], 0
        if step == "configure":
            return step, ["configured"], 0
        if step == "compile":
            return step, ["[1/1] Linking qemu-ga"], 0
        if step == "install":
            return self._install(argv[-1])
        if step == "version":
            return step, [f"QEMU Guest Agent {QEMU_VERSION}"], 0
        if step == "sbom-link":  # the relink: a map, and the stripped copy is the agent
            self.files[LINK_MAP] = FAKE_LINK_MAP.encode()
            return step, [f"{_digest(self.engine.agent)}  /tmp/qga-sbom/qemu-ga.stripped"], 0
        if step == "sbom-owners":
            paths = argv[argv.index("sh", 3) + 1 :]
            lines = [f"FILE\t{path}\t{path}" for path in paths]
            lines += [_owner(path) for path in paths]
            lines += [
                f"Q\t{name}\t{v}\tamd64\t{source}\t{v}\t{name}:amd64"
                for name, (v, source) in OWNERS.items()
            ]
            return step, lines, 0
        raise AssertionError(f"unexpected step {step!r}: {argv}")

    def _install(self, script: str) -> tuple[str, list[str], int]:
        """Each `install -m 0755 SRC DEST` line puts the agent at DEST; then the checksums."""
        sums = []
        for line in script.splitlines():
            words = shlex.split(line)
            if words[:3] == ["install", "-m", "0755"]:
                root, name = words[-1].split("/artifacts/")
                self.files[words[-1]] = self.engine.agent
                self.engine.installed.append(name)
                sums.append(f"{_digest(self.engine.agent)}  {name}\n")
        self.files[f"{root}/artifacts.sha256"] = "".join(sums).encode()
        return "install", [], 0

    def _configured_tree(self, step: str, script: str) -> tuple[str, list[str], int]:
        """The configure cache's archives, kept by the engine (its volume outlives containers);
        the key is the operand the step names."""
        stored = self.engine.configured_trees
        if step == "configured-extract":
            return step, [], 0
        key = re.search(r"/ccache/configured/([0-9a-f]{64})\.tar", script)[1]  # type: ignore[index]
        if step == "configured-store":
            stored[key] = b"configured tree " + key.encode()
            return step, [f"{_digest(stored[key])}  {key}.tar"], 0
        if step == "configured-restore":
            if key not in stored:
                return step, [], 1
            self.files["/work/qemu/configured.tar"] = stored[key]
            return step, [f"{_digest(stored[key])}  /work/qemu/configured.tar"], 0
        if step == "configured-remove":
            stored.pop(key, None)
            return step, [], 0
        raise AssertionError(f"unexpected configure-cache step {step}")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FakeEngine:
    """The engine Protocol, remembering what was asked of it."""

    def __init__(self) -> None:
        self.run_id = "fakerun00001"
        self.endpoint = "unix:///fake/docker.sock"
        self.images: dict[str, ImageRecord] = {}
        self.created: list[FakeContainer] = []
        self.volumes: list[Any] = []
        self.removed: list[str] = []
        self.events: list[tuple[object, ...]] = []
        self.exit_codes: dict[str, int] = {}
        self.unpacked = b""
        self.patched: list[bytes] = []
        self.installed: list[str] = []  # artifact names the install step was given
        self.agent = AGENT  # what the compile "builds"
        self.commands: list[tuple[str, list[str]]] = []  # each step's kind and argv
        self.configured_trees: dict[str, bytes] = {}  # the cache volume's configured trees

    def image_id(self, reference: str) -> str | None:
        record = self.inspect_image(reference)
        return record.id if record else None

    def inspect_image(self, reference: str) -> ImageRecord | None:
        return self.images.get(reference)

    def pull(self, reference: str) -> str:
        self.events.append(("pull", reference))
        self.images[reference] = ImageRecord(id="sha256:" + "b" * 64)
        return self.images[reference].id

    def build_image(
        self,
        dockerfile: bytes,
        tag: str,
        *,
        build_args: Mapping[str, str],
        labels: Mapping[str, str],
        on_line: LineSink,
        fresh: bool = False,
    ) -> str:
        self.events.append(("build", tag, dict(build_args)))
        self.images[tag] = ImageRecord(id="sha256:" + "c" * 64, labels=dict(labels))
        return self.images[tag].id

    def import_rootfs(
        self, tar_stream: IO[bytes], reference: str, labels: Mapping[str, str]
    ) -> str:
        raise AssertionError("the recipe names a registry base")

    @contextmanager
    def container(self, image: str, **settings: Any) -> Iterator[FakeContainer]:
        box = FakeContainer(self, image)
        self.created.append(box)
        self.events.append(("container", image, settings["network"], settings["user"]))
        self.volumes.append(settings.get("volumes"))
        try:
            yield box
        finally:
            self.removed.append(box.id)
            self.events.append(("removed", box.id))

    def ensure_volume(self, name: str, labels: Mapping[str, str]) -> None:
        self.events.append(("volume", name, dict(labels)))

    def server_version(self) -> str:
        return "fake-engine"

    def describe(self) -> dict[str, str | None]:
        return {"endpoint": self.endpoint, "kind": "unix", "id": "FAKE", "server_version": "0"}
