"""Bad input against the real engine: one clear message, its exit code, no traceback, no
container left, no output directory."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from builder.engine import Engine
from tests.helpers import (
    DEFAULT_RECIPE,
    CliResult,
    leftover_containers,
    load_default,
    load_explicit,
    localize,
    run_cli,
    write_variant,
)


def assert_clean_failure(result: CliResult, code: int, out: Path, engine: Engine) -> None:
    assert result.returncode == code, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.tmp-")]
    assert leftover_containers(engine) == []


def test_wrong_patch_digest_stops_before_any_container(tmp_path: Path, engine: Engine) -> None:
    data = localize(load_explicit(), tmp_path)
    data["patches"][0]["sha256"] = "0" * 64
    recipe = write_variant(tmp_path, "bad-digest", explicit=True, patches=data["patches"])
    out = tmp_path / "out"
    result = run_cli("run", str(recipe), "--output", str(out))
    assert_clean_failure(result, 3, out, engine)
    assert "patches[0]: sha256 mismatch" in result.stderr
    assert "] base-image" not in result.stderr  # refused before the engine did anything


def test_patch_that_does_not_apply_names_patch_file_and_hunk(
    tmp_path: Path, engine: Engine
) -> None:
    patch = tmp_path / "0001-wrong-context.patch"
    patch.write_text(
        "--- a/qga/commands.c\n+++ b/qga/commands.c\n@@ -1,3 +1,3 @@\n"
        " this line is not in QEMU\n-nor this one\n+replacement\n and not this\n"
    )
    digest = hashlib.sha256(patch.read_bytes()).hexdigest()
    patches = [{"path": str(patch), "sha256": digest}]
    recipe = write_variant(tmp_path, "bad-patch", explicit=True, patches=patches)
    out = tmp_path / "out"
    result = run_cli("run", str(recipe), "--output", str(out))
    assert_clean_failure(result, 4, out, engine)
    assert f"patch {patch} does not apply" in result.stderr
    assert "qga/commands.c: hunk #1 (at line 1) failed" in result.stderr
    assert "] configure" not in result.stderr  # stopped before configure


def test_failing_step_prints_its_tail_and_log_path(tmp_path: Path, engine: Engine) -> None:
    data = load_explicit()
    recipe = write_variant(
        tmp_path,
        "bad-flag",
        explicit=True,
        configure={"flags": [*data["configure"]["flags"], "--enable-nonsense"]},
    )
    out = tmp_path / "out"
    result = run_cli("run", str(recipe), "--output", str(out))
    assert_clean_failure(result, 7, out, engine)
    assert "step configure failed" in result.stderr
    assert "nonsense" in result.stderr.split("last ")[1]
    log_path = result.stderr.split("full log: ")[1].split()[0]
    assert Path(log_path).is_file() and "nonsense" in Path(log_path).read_text()


def test_unreachable_daemon(tmp_path: Path) -> None:
    out = tmp_path / "out"
    endpoint = f"unix://{tmp_path}/no-docker.sock"
    result = run_cli(
        "run", str(DEFAULT_RECIPE), "--output", str(out), env={"DOCKER_HOST": endpoint}
    )
    assert result.returncode == 5
    assert f"cannot reach the Docker daemon at {endpoint}" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()
    assert result.seconds < 5


def test_missing_base_that_cannot_be_pulled(tmp_path: Path, engine: Engine) -> None:
    out = tmp_path / "out"
    reference = "qga-builder-test/absent:1@sha256:" + "0" * 64
    result = run_cli("run", str(DEFAULT_RECIPE), "--output", str(out), "--base-image", reference)
    assert_clean_failure(result, 6, out, engine)
    assert f"base image {reference} is not here and cannot be pulled" in result.stderr
    assert "debootstrap" in result.stderr  # says what to do


@pytest.mark.parametrize("where", ["/proc/qga-builder-out", "file"])
def test_unwritable_output(tmp_path: Path, where: str) -> None:
    if where == "file":
        (tmp_path / "file").write_text("in the way")
        where = str(tmp_path / "file" / "out")
    result = run_cli("run", str(DEFAULT_RECIPE), "--output", where)
    assert result.returncode == 9, result.stderr
    assert "cannot write" in result.stderr and "Traceback" not in result.stderr


def test_wrong_source_digest(tmp_path: Path, engine: Engine) -> None:
    fake = tmp_path / "qemu.tar.xz"
    fake.write_bytes(b"not qemu")
    data = load_default()
    data["source"] = {"tarball": {"path": str(fake), "sha256": "1" * 64}}
    recipe = write_variant(tmp_path, "bad-source", source=data["source"])
    out = tmp_path / "out"
    result = run_cli("run", str(recipe), "--output", str(out))
    assert_clean_failure(result, 3, out, engine)
    assert "source.tarball: sha256 mismatch" in result.stderr


def test_base_that_cannot_be_made(tmp_path: Path, engine: Engine) -> None:
    data = load_default()
    data["environment"]["base"] = {"debootstrap": {"suite": "nosuchsuite"}}
    recipe = write_variant(
        tmp_path, "bad-suite", environment=localize(data, tmp_path)["environment"]
    )
    out = tmp_path / "out"
    result = run_cli("run", str(recipe), "--output", str(out))
    assert_clean_failure(result, 6, out, engine)
    assert "base image qga-builder/base:nosuchsuite-minbase is missing and cannot be made" in (
        result.stderr
    )
