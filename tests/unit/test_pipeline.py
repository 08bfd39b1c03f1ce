"""The orchestrator without Docker: a fake engine and container behind the stages' Protocols
drive `pipeline.run()` through every stage. What is checked is the orchestrator's own control
flow: the order of the stages, what each hands the next, the container's life, and that a
failure or an interrupt at any stage leaves no output, no staging directory and no container.
(The integration tests build for real.)
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shlex
import signal
import struct
import tarfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

import pytest
import yaml

from builder import pipeline
from builder.commands.common import load_plan
from builder.config.layout import Variation
from builder.config.overrides import Overrides
from builder.engine import ImageRecord
from builder.errors import InputError, Interrupted, PatchError, StepError
from builder.host.cache import Cache
from builder.log import LineSink
from builder.stages import output_dir
from builder.stages.container_commands import PATHS_MARK
from tests.helpers import ROOT

QEMU_VERSION = "10.0.13"


def fake_static_elf() -> bytes:
    """An ELF64 header with no program or section headers: static and stripped."""
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header = struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, 0, 0, 0, 0, 64, 56, 0, 64, 0, 0)
    return ident + header


AGENT = fake_static_elf()


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
    ) -> int:
        argv = command[4:] if command[:2] == ["sh", "-c"] else command  # the umask wrapper
        kind, lines, code = self._answer(argv)
        self._event("run", kind, dict(env or {}))
        for line in lines:
            on_line(line)
        return self.engine.exit_codes.get(kind, code)

    def _answer(self, argv: list[str]) -> tuple[str, list[str], int]:
        script = argv[3] if argv[:3] == ["sh", "-eu", "-c"] else ""
        if script.startswith("command -v ccache"):
            return "ccache-probe", ["ccache version 4.11.3"], 0
        if script.startswith("ccache --"):
            stats = ["direct_cache_hit\t40", "preprocessed_cache_hit\t2", "cache_miss\t3"]
            return "ccache-stats", stats if "print" in script else [], 0
        if "dpkg-query" in script:
            lines = ["distribution Debian GNU/Linux 13 (trixie)", "format deb"]
            return "inventory", [*lines, "gcc\t14.2.0-19\tamd64"], 0
        if "/ccache/configured" in script or script.startswith("tar -xf /work/qemu/configured"):
            return self._configured_tree(script)
        if PATHS_MARK in script:  # `qemu-ga -D -F` where built and from a copy elsewhere
            settings = ["statedir=/var/run", "pidfile=/var/run/qemu-ga.pid"]
            settings.append("fsfreeze-hook=/etc/qemu/fsfreeze-hook")
            return "agent-paths", [PATHS_MARK + "a", *settings, PATHS_MARK + "b", *settings], 0
        if script.startswith("mkdir -p"):
            return "prepare", [], 0
        if script.startswith("tar -xf"):
            archive = next(name for name in self.files if "/in/" in name)
            self.engine.unpacked = self.files[archive]
            return "unpack", ["unpacked 3 files", QEMU_VERSION], 0
        if argv[:1] == ["patch"]:
            patch = self.files[argv[-1]]
            self.engine.patched.append(patch)
            if b"FAIL" in patch:
                return "patch", ["patching file qga/commands.c", "Hunk #2 FAILED at 10."], 1
            return "patch", [f"patching file qga/commands.c ({len(patch)} bytes)"], 0
        if argv[0].endswith("/configure"):
            return "configure", ["configured"], 0
        if argv[:1] == ["ninja"]:
            return "compile", ["[1/1] Linking qemu-ga"], 0
        if script.startswith("install -m 0755"):
            return self._install(script)
        if argv[-1:] == ["--version"]:
            return "version", [f"QEMU Guest Agent {QEMU_VERSION}"], 0
        raise AssertionError(f"unexpected command {argv}")

    def _install(self, script: str) -> tuple[str, list[str], int]:
        """Each `install -m 0755 SRC DEST` line puts the agent at DEST; then the checksums."""
        sums = []
        for line in script.splitlines():
            words = shlex.split(line)
            if words[:3] == ["install", "-m", "0755"]:
                root, name = words[-1].split("/artifacts/")
                self.files[words[-1]] = AGENT
                self.engine.installed.append(name)
                sums.append(f"{_digest(AGENT)}  {name}\n")
        self.files[f"{root}/artifacts.sha256"] = "".join(sums).encode()
        return "install", [], 0

    def _configured_tree(self, script: str) -> tuple[str, list[str], int]:
        """The configure cache's archives, kept by the engine (its volume outlives containers)."""
        stored = self.engine.configured_trees
        if script.startswith("tar -xf"):
            return "configured-extract", [], 0
        key = re.search(r"/ccache/configured/([0-9a-f]{64})\.tar", script)[1]  # type: ignore[index]
        if script.startswith("mkdir -p /ccache/configured"):
            stored[key] = b"configured tree " + key.encode()
            return "configured-store", [f"{_digest(stored[key])}  {key}.tar"], 0
        if script.startswith("test -f"):
            if key not in stored:
                return "configured-restore", [], 1
            self.files["/work/qemu/configured.tar"] = stored[key]
            return "configured-restore", [f"{_digest(stored[key])}  /work/qemu/configured.tar"], 0
        if script.startswith("rm -f"):
            stored.pop(key, None)
            return "configured-remove", [], 0
        raise AssertionError(f"unexpected configure-cache command {script}")


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


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Any, str, FakeEngine, Cache]:
    tree = tmp_path / "qemu"
    (tree / "qga").mkdir(parents=True)
    (tree / "configure").write_text("#!/bin/sh\n")
    (tree / "VERSION").write_text(QEMU_VERSION + "\n")
    patch = tmp_path / "0001-ours.patch"
    patch.write_bytes(b"--- a/qga/commands.c\n+++ b/qga/commands.c\n")
    (tmp_path / "Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n")
    recipe = {
        "name": "fake",
        "environment": {
            "dockerfile": "Dockerfile",
            "base": {"image": "debian:trixie@sha256:" + "a" * 64},
            "packages": ["gcc"],
        },
        "source": {"local": {"path": str(tree)}},
        "patches": [{"path": patch.name, "sha256": hashlib.sha256(patch.read_bytes()).hexdigest()}],
        "configure": {"flags": ["--static"]},
        "build": {"source_date_epoch": 1700000000},
        "artifacts": [
            {"path": "qga/qemu-ga", "name": "qemu-ga-patched-static", "kind": "static-elf"}
        ],
        "services": {"kinds": ["systemd"]},
    }
    path = tmp_path / "fake.yaml"
    path.write_text(yaml.safe_dump(recipe))
    plan, text = load_plan(path, Overrides(output=tmp_path / "out" / "fake"))
    return plan, text, FakeEngine(), Cache(tmp_path / "cache")


def test_a_run_goes_through_every_stage_in_order(setup) -> None:
    plan, text, engine, cache = setup
    result = pipeline.run(plan, engine, cache, text)
    written = json.loads((result.output_dir / "manifest.json").read_text())
    stages = list(pipeline.stage_names(plan))[:-1]
    # Every stage, and the container's start and removal between them (time no stage owns).
    assert [t for t in written["timings_seconds"] if t in stages] == stages
    assert {"container-start", "container-removal"} <= set(written["timings_seconds"])
    assert pipeline.stage_names(plan) == (
        "source", "series", "patches", "base-image", "build-image", "reuse", "toolchain", "unpack",
        "patch", "configure", "compile", "install", "collect", "check", "publish",
    )  # fmt: skip
    kinds = [e[1] for e in engine.events if e[0] == "run"]
    assert kinds == [
        "inventory", "ccache-probe", "prepare", "unpack", "patch", "ccache-stats", "configure",
        "configured-store", "compile", "ccache-stats", "install", "version", "agent-paths",
    ]  # fmt: skip
    # One container, unprivileged and offline, made after the image and gone before publish.
    assert [e[0] for e in engine.events if e[0] in ("pull", "build", "container", "removed")] == [
        "pull",
        "build",
        "container",
        "removed",
    ]
    assert ("container", "sha256:" + "c" * 64, False, "builder") in engine.events
    assert engine.removed == [box.id for box in engine.created]
    out = result.output_dir
    assert (out / "qemu-ga-patched-static").read_bytes() == AGENT
    assert output_dir.why_not_ours(out) is None  # a complete release of the tool's own
    assert output_dir.leftovers(out) == []


def test_each_stage_hands_the_next_what_it_learned(setup) -> None:
    plan, text, engine, cache = setup
    result = pipeline.run(plan, engine, cache, text)
    manifest = result.manifest
    # source -> unpack: the archive sent is the one whose digest the manifest records.
    assert hashlib.sha256(engine.unpacked).hexdigest() == manifest["source"]["tree_tar_sha256"]
    # patches -> patch: the checked bytes are the applied bytes.
    assert engine.patched == [plan.patches[0].path.read_bytes()]
    # build-image -> container: the image built is the one the container runs.
    assert engine.created[0].image == manifest["environment"]["image"]["id"]
    # source's SOURCE_DATE_EPOCH reaches every step in the container.
    envs = [
        e[2] for e in engine.events if e[0] == "run" and e[1] not in ("inventory", "ccache-probe")
    ]
    assert {env["SOURCE_DATE_EPOCH"] for env in envs} == {"1700000000"}
    # unpack's VERSION -> check and manifest; install's digest -> collect -> SHA256SUMS.
    assert manifest["qemu_version"] == QEMU_VERSION
    agent = next(a for a in manifest["artifacts"] if a["name"] == "qemu-ga-patched-static")
    assert agent["sha256"] == hashlib.sha256(AGENT).hexdigest()
    assert agent["detail"].startswith("ELF64 static")
    sums = (result.output_dir / "SHA256SUMS").read_text()
    assert f"{agent['sha256']}  qemu-ga-patched-static" in sums
    assert "qemu-guest-agent.service" in sums
    assert manifest["environment"]["packages"] == {"gcc": "14.2.0-19 amd64"}
    assert manifest["environment"]["distribution"] == "Debian GNU/Linux 13 (trixie)"
    assert manifest["host"]["docker_server"] == "fake-engine"


def test_version_in_artifact_names_is_resolved_before_the_build(setup) -> None:
    """`{version}` becomes the QEMU version + "+qga1" in stage `series`; install, collect,
    check, SHA256SUMS, the manifest and provenance all see the resolved name."""
    _, _, engine, cache = setup
    tmp_path = cache.root.parent
    data = yaml.safe_load((tmp_path / "fake.yaml").read_text())
    data["artifacts"][0]["name"] = "qemu-ga-{version}-linux-x86_64-static"
    (tmp_path / "versioned.yaml").write_text(yaml.safe_dump(data))
    plan, text = load_plan(tmp_path / "versioned.yaml", Overrides(output=tmp_path / "v"))
    assert plan.artifacts[0].name == "qemu-ga-{version}-linux-x86_64-static"
    result = pipeline.run(plan, engine, cache, text)
    name = f"qemu-ga-{QEMU_VERSION}+qga1-linux-x86_64-static"
    assert engine.installed == [name]
    out = result.output_dir
    assert (out / name).read_bytes() == AGENT
    assert not any("{" in path.name for path in out.iterdir())
    agent = next(a for a in result.manifest["artifacts"] if a["kind"] == "static-elf")
    assert agent["name"] == name and agent["detail"].startswith("ELF64 static")
    assert f"{agent['sha256']}  {name}" in (out / "SHA256SUMS").read_text()
    statement = json.loads((out / "provenance.intoto.json").read_text())
    assert name in [subject["name"] for subject in statement["subject"]]
    log = next(result.log_dir.glob("*-series.log")).read_text()
    assert f"artifact qemu-ga-{{version}}-linux-x86_64-static is published as {name}" in log


def test_the_manifest_says_what_the_build_is_for(setup) -> None:
    plan, text, engine, cache = setup
    manifest = pipeline.run(plan, engine, cache, text).manifest
    assert (manifest["target"], manifest["architecture"]) == ("linux", "x86_64")
    assert manifest["series"]["series"] == "10.0"


def _assert_nothing_left(plan, engine: FakeEngine, cache: Cache) -> None:
    final = plan.output_dir.absolute()
    assert not final.exists()
    assert output_dir.leftovers(final) == []
    assert [p.name for p in final.parent.iterdir()] == [f".{final.name}.lock"]
    assert engine.removed == [box.id for box in engine.created]
    assert list(cache.dir("tmp").iterdir()) == []  # the packed source tree is gone


@pytest.mark.parametrize("stage", pipeline.STAGES, ids=lambda s: s.name)
@pytest.mark.parametrize("fault", ["error", "interrupt"])
def test_a_failure_at_any_stage_leaves_nothing(
    setup,
    stage: pipeline.Stage,
    fault: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plan, text, engine, cache = setup
    reached: list[str] = []

    def fail(ctx, output) -> None:
        reached.append(stage.name)
        if fault == "interrupt":
            raise Interrupted(signal.SIGINT)
        raise StepError(f"{stage.name} broke")

    # The stage under test runs (msi and vm-test too, on this Linux recipe); the others as usual.
    table = tuple(
        replace(s, run=fail, applies=lambda plan: True) if s.name == stage.name else s
        for s in pipeline.STAGES
    )
    monkeypatch.setattr(pipeline, "STAGES", table)
    monkeypatch.setattr(pipeline, "preflight", lambda plan: None)
    expected = Interrupted if fault == "interrupt" else StepError
    with pytest.raises(expected):
        pipeline.run(plan, engine, cache, text)
    assert reached == [stage.name]
    _assert_nothing_left(plan, engine, cache)


def test_the_msi_stage_belongs_to_windows_recipes(setup) -> None:
    plan, *_ = setup
    assert "msi" not in pipeline.stage_names(plan)
    windows = replace(plan, artifacts=(replace(plan.artifacts[0], kind="msi"),))
    names = pipeline.stage_names(windows)
    assert names.index("check") < names.index("msi") < names.index("publish")


def test_a_patch_that_does_not_apply_names_file_and_hunk(setup) -> None:
    plan, text, engine, cache = setup
    plan.patches[0].path.write_bytes(b"FAIL")
    fixed = replace(
        plan, patches=(replace(plan.patches[0], sha256=hashlib.sha256(b"FAIL").hexdigest()),)
    )
    with pytest.raises(PatchError, match=r"qga/commands.c: hunk #2 \(at line 10\) failed"):
        pipeline.run(fixed, engine, cache, text)
    _assert_nothing_left(fixed, engine, cache)


def test_a_failing_step_stops_the_run_with_its_tail(setup) -> None:
    plan, text, engine, cache = setup
    engine.exit_codes["compile"] = 2
    with pytest.raises(StepError, match="step compile failed") as raised:
        pipeline.run(plan, engine, cache, text)
    assert "Linking qemu-ga" in raised.value.message
    kinds = [e[1] for e in engine.events if e[0] == "run"]
    assert kinds[-1] == "compile"  # nothing ran after it
    _assert_nothing_left(plan, engine, cache)


def test_a_source_swapped_after_its_check_is_not_built(
    setup,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bytes sent into the container are hashed as they are sent: a file replaced between
    the source stage and unpack is refused, not built under the checked digest."""
    from builder.stages import build

    plan, text, engine, cache = setup
    real_unpack = build.unpack

    def swap_then_unpack(ctx, output) -> None:
        ctx.source.archive.write_bytes(b"something else entirely")
        real_unpack(ctx, output)

    table = tuple(
        replace(s, run=swap_then_unpack) if s.name == "unpack" else s for s in pipeline.STAGES
    )
    monkeypatch.setattr(pipeline, "STAGES", table)
    with pytest.raises(InputError, match="changed after it was checked"):
        pipeline.run(plan, engine, cache, text)
    assert engine.unpacked == b""  # nothing was unpacked
    assert not any(e[0] == "put" and "/in" in str(e[1]) for e in engine.events)
    _assert_nothing_left(plan, engine, cache)


def test_a_dockerfile_swapped_after_planning_is_not_built(setup) -> None:
    plan, text, engine, cache = setup
    plan.image.dockerfile.write_text("FROM evil\n")
    with pytest.raises(InputError, match="changed after the run was planned"):
        pipeline.run(plan, engine, cache, text)
    assert not any(e[0] == "build" for e in engine.events)
    _assert_nothing_left(plan, engine, cache)


def test_secrets_stay_out_of_logs_manifest_and_provenance(
    setup,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from builder import log

    plan, text, engine, cache = setup
    args = {"HTTP_PROXY": "http://lab:hunter2-pw@proxy.lab:3128", "API_TOKEN": "s3cr3t-tok3n"}
    image = replace(plan.image, build_args=tuple(sorted(args.items())))
    text += "\n# build_args: API_TOKEN: s3cr3t-tok3n, proxy http://lab:hunter2-pw@proxy.lab\n"
    log.configure("json")
    result = pipeline.run(replace(plan, image=image), engine, cache, text)
    written = [path.read_text() for path in result.output_dir.rglob("*") if path.is_file()]
    written.append(capsys.readouterr().err)
    for blob in written:
        assert "hunter2-pw" not in blob and "s3cr3t-tok3n" not in blob
    recorded = json.loads((result.output_dir / "manifest.json").read_text())
    assert recorded["environment"]["image"]["build_args"]["API_TOKEN"] == "***"
    assert recorded["environment"]["image"]["build_args"]["HTTP_PROXY"] == "***"
    assert "http://***@proxy.lab" in recorded["recipe"]["text"]
    # ... while the engine got the real values to build with.
    built = next(e for e in engine.events if e[0] == "build")
    assert built[2]["API_TOKEN"] == "s3cr3t-tok3n"


def _series_recipe(tmp_path: Path, version: str, target_name: str = "auto") -> tuple[Any, str]:
    """The fake recipe with `patches`, base, packages and configure left to the series."""
    (tmp_path / "qemu" / "VERSION").write_text(version + "\n")
    data = yaml.safe_load((tmp_path / "fake.yaml").read_text())
    for key in ("patches", "configure"):
        data.pop(key)
    data["environment"].pop("base")
    data["environment"].pop("packages")
    data["name"] = target_name
    path = tmp_path / f"{target_name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_plan(path, Overrides(output=tmp_path / "out" / target_name))


def _known_base(engine: FakeEngine, suite: str) -> None:
    from builder.formats.checksums import sha256_json
    from builder.host import debian
    from builder.stages.base_image import (
        LABEL_BASE_INPUTS,
        debootstrap_inputs,
        debootstrap_tag,
    )

    inputs = debootstrap_inputs(suite, "minbase", debian.host_mirror())
    tag = debootstrap_tag(f"qga-builder/base:{suite}-minbase", inputs)
    labels = {LABEL_BASE_INPUTS: sha256_json(inputs)}
    engine.images[tag] = ImageRecord(id=f"sha256:{suite}", labels=labels)


def test_a_recipe_without_patches_takes_the_series_set_and_environment(
    setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, engine, cache = setup
    # Any mirror: not this host's apt sources (an Ubuntu host has no Debian mirror in them).
    monkeypatch.setenv("QGA_BUILDER_DEBIAN_MIRROR", "http://mirror.example/debian")
    tmp_path = cache.root.parent
    plan, text = _series_recipe(tmp_path, "7.2.0")
    assert plan.series_decides == ("patches", "base", "packages", "configure")
    _known_base(engine, "bookworm")
    result = pipeline.run(plan, engine, cache, text)
    series = result.manifest["series"]
    assert series["series"] == "7.2" and series["patch_set"] == "patches/qemu-7.2/"
    assert series["suite"] == "bookworm" and "leaves" in series["why"]
    applied = ROOT / "patches/qemu-7.2/0001-qga-return-guest-exec-output-on-every-status-call.patch"
    assert engine.patched == [applied.read_bytes()]
    built = next(e for e in engine.events if e[0] == "build")
    assert built[2]["BASE_IMAGE"] == "sha256:bookworm"  # the series' suite
    assert "libglib2.0-dev" in built[2]["PACKAGES"]
    configure = result.manifest["build"]["configure"]
    assert "--with-git-submodules=ignore" in configure  # 7.2's own flags
    assert result.manifest["cache_key"] != plan.cache_key  # the series' choices count


def test_a_series_without_a_patch_set_stops_before_any_image(setup) -> None:
    _, _, engine, cache = setup
    plan, text = _series_recipe(cache.root.parent, "4.2.1")
    with pytest.raises(PatchError, match=r"QEMU 4\.2 has no patch set of ours") as raised:
        pipeline.run(plan, engine, cache, text)
    assert raised.value.exit_code == 4
    assert not any(e[0] in ("build", "pull", "container") for e in engine.events)
    _assert_nothing_left(plan, engine, cache)


def test_the_recipes_own_patches_win_over_the_series(setup) -> None:
    plan, text, engine, cache = setup
    (cache.root.parent / "qemu" / "VERSION").write_text("7.2.0\n")
    result = pipeline.run(plan, engine, cache, text)
    assert result.manifest["series"]["patch_set"] == "named by the recipe"
    assert engine.patched == [plan.patches[0].path.read_bytes()]
    assert result.manifest["cache_key"] == plan.cache_key


def test_a_source_without_version_stops_before_any_image(setup) -> None:
    _, _, engine, cache = setup
    plan, text = _series_recipe(cache.root.parent, "10.0.13")
    (cache.root.parent / "qemu" / "VERSION").unlink()
    with pytest.raises(InputError, match="no top-level VERSION"):
        pipeline.run(plan, engine, cache, text)
    assert not any(e[0] in ("build", "pull", "container") for e in engine.events)
    _assert_nothing_left(plan, engine, cache)


def test_provenance_names_the_series(setup) -> None:
    plan, text, engine, cache = setup
    result = pipeline.run(plan, engine, cache, text)
    statement = json.loads((result.output_dir / "provenance.intoto.json").read_text())
    internal = statement["predicate"]["buildDefinition"]["internalParameters"]
    assert internal["series"]["series"] == "10.0"


def test_the_compiler_cache_is_a_volume_of_the_build_image(setup) -> None:
    plan, text, engine, cache = setup
    result = pipeline.run(plan, engine, cache, text)
    assert engine.volumes == [{"qga-ccache-" + "c" * 16: "/ccache"}]
    compile_env = next(e[2] for e in engine.events if e[:2] == ("run", "compile"))
    assert compile_env["CCACHE_DIR"] == "/ccache"
    assert compile_env["PATH"].startswith("/usr/lib/ccache:")
    assert "CCACHE_BASEDIR" not in compile_env  # it would rewrite paths the prefix map needs
    record = result.manifest["build"]["ccache"]
    assert record == {
        "version": "ccache version 4.11.3", "volume": "/ccache", "hits": 42, "misses": 3
    }  # fmt: skip


def test_no_ccache_mounts_nothing_and_sets_nothing(setup) -> None:
    plan, text, engine, cache = setup
    result = pipeline.run(plan, engine, cache, text, use_ccache=False)
    assert engine.volumes == [None]
    assert all("CCACHE_DIR" not in e[2] for e in engine.events if e[0] == "run")
    assert result.manifest["build"]["ccache"] is None


def test_a_second_build_reuses_the_configured_tree(setup) -> None:
    plan, text, engine, cache = setup
    first = pipeline.run(plan, engine, cache, text, use_cache=False)
    record = first.manifest["build"]["configured_tree"]
    assert record["reused"] is False and record["key"] in engine.configured_trees
    engine.events.clear()
    second = pipeline.run(plan, engine, cache, text, use_cache=False)
    kinds = [e[1] for e in engine.events if e[0] == "run"]
    assert "configure" not in kinds
    assert kinds[kinds.index("configured-restore") :][:2] == [
        "configured-restore",
        "configured-extract",
    ]
    assert second.manifest["build"]["configured_tree"] == {"key": record["key"], "reused": True}
    assert second.manifest["timings_seconds"]["configure"] >= 0


def test_a_configured_tree_the_tool_did_not_store_is_deleted_and_never_used(setup) -> None:
    plan, text, engine, cache = setup
    first = pipeline.run(plan, engine, cache, text, use_cache=False)
    key = first.manifest["build"]["configured_tree"]["key"]
    engine.configured_trees[key] = b"replaced by someone else"
    engine.events.clear()
    second = pipeline.run(plan, engine, cache, text, use_cache=False)
    kinds = [e[1] for e in engine.events if e[0] == "run"]
    assert kinds[kinds.index("configured-restore") :][:3] == [
        "configured-restore",
        "configured-remove",
        "configure",
    ]
    assert "configured-extract" not in kinds
    assert second.manifest["build"]["configured_tree"]["reason"].startswith("the stored archive")
    log = (second.log_dir / "10-configure.log").read_text()
    assert "was not stored by this tool" in log


def test_without_the_compiler_cache_configure_always_runs(setup) -> None:
    plan, text, engine, cache = setup
    pipeline.run(plan, engine, cache, text, use_cache=False)
    engine.events.clear()
    result = pipeline.run(plan, engine, cache, text, use_cache=False, use_ccache=False)
    kinds = [e[1] for e in engine.events if e[0] == "run"]
    assert "configure" in kinds and not [k for k in kinds if k.startswith("configured-")]
    assert result.manifest["build"]["configured_tree"] is None


def test_verify_roots_never_use_a_configured_tree(setup) -> None:
    plan, text, engine, cache = setup
    pipeline.run(plan, engine, cache, text, use_cache=False)
    engine.events.clear()
    tagged = Variation.for_run("fakerun00002", tag="b-")
    result = pipeline.run(plan, engine, cache, text, variation=tagged, use_cache=False)
    kinds = [e[1] for e in engine.events if e[0] == "run"]
    assert "configure" in kinds and not [k for k in kinds if k.startswith("configured-")]
    assert result.manifest["build"]["configured_tree"] is None


@pytest.mark.parametrize("leaves_patches", [False, True], ids=["named", "series"])
def test_plan_prints_the_cache_key_the_manifest_records(
    setup, leaves_patches: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """`plan` and a run of the same recipe agree on `cache_key`, also when the source's
    series chooses the patches (the run's key then covers the series' choices)."""
    from builder.cli import main

    _, _, engine, cache = setup
    tmp_path = cache.root.parent
    monkeypatch.setenv("QGA_BUILDER_CACHE", str(cache.root))
    data = yaml.safe_load((tmp_path / "fake.yaml").read_text())
    if leaves_patches:
        del data["patches"]  # the 10.0 patch set, with the recipe's base, packages and flags
    path = tmp_path / "keyed.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["plan", str(path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    plan, text = load_plan(path, Overrides(output=tmp_path / "keyed"))
    assert plan.series_decides == (("patches",) if leaves_patches else ())
    manifest = pipeline.run(plan, engine, cache, text).manifest
    assert printed["cache_key"] == manifest["cache_key"]
    if leaves_patches:  # read from the local tree, as the run reads it
        assert printed["qemu_version"] == QEMU_VERSION
