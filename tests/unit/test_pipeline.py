"""The orchestrator without Docker: a fake engine and container behind the stages' Protocols
drive `pipeline.run()` through every stage. What is checked is the orchestrator's own control
flow: the order of the stages, what each hands the next, the container's life, and that a
failure or an interrupt at any stage leaves no output, no staging directory and no container.
(The integration tests build for real.)
"""

from __future__ import annotations

import hashlib
import json
import shlex
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from builder import pipeline
from builder.commands.common import load_plan
from builder.config.layout import Variation
from builder.config.overrides import Overrides
from builder.engine import ImageRecord
from builder.errors import InputError, Interrupted, PatchError, StepError
from builder.host.cache import Cache
from builder.outputs import output_dir
from tests.fakes import AGENT, OWNERS, QEMU_VERSION, FakeEngine
from tests.helpers import ROOT


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
        "patch", "configure", "compile", "install", "collect", "check", "link-map", "publish",
    )  # fmt: skip
    kinds = [e[1] for e in engine.events if e[0] == "run"]
    assert kinds == [
        "inventory", "ccache-probe", "prepare", "unpack", "patch", "ccache-stats", "configure",
        "configured-store", "compile", "ccache-stats", "install", "version", "agent-paths",
        "sbom-link", "sbom-owners",
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
    assert manifest["environment"]["packages"] == {
        "gcc": "14.2.0-19 amd64",
        **{name: f"{version} amd64" for name, (version, _) in OWNERS.items()},
    }
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
    assert main(["plan", "--json", str(path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    plan, text = load_plan(path, Overrides(output=tmp_path / "keyed"))
    assert plan.series_decides == (("patches",) if leaves_patches else ())
    manifest = pipeline.run(plan, engine, cache, text).manifest
    assert printed["cache_key"] == manifest["cache_key"]
    assert printed["qemu_version"] == QEMU_VERSION  # read from the local tree, as the run reads it
    # What `plan` shows is what the run built with: patches, image, flags, artifacts.
    assert [p["sha256"] for p in printed["patches"]] == [p["sha256"] for p in manifest["patches"]]
    built = manifest["environment"]["image"]
    assert dict(printed["image"]["build_args"]) == built["build_args"]
    assert printed["image"]["dockerfile_sha256"] == built["dockerfile_sha256"]
    assert manifest["build"]["configure"].startswith(
        shlex.join(["configure", *printed["configure_flags"]])
    )
    assert [a["name"] for a in printed["artifacts"]] == [
        a["name"] for a in manifest["artifacts"] if a["kind"] == "static-elf"
    ]
