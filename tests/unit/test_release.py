"""`release`: run outputs from several machines checked and merged into one release directory.

The inputs are real directories shaped as `run` writes them (records made by the tool's own
format code); each kind of tampering or conflict gets one message naming the directory and the
file, exit 3, and leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from builder.cli import main
from builder.errors import Interrupted
from builder.formats.checksums import format_sha256sums, sha256_bytes
from builder.formats.manifest import MANIFEST_SCHEMA
from builder.formats.provenance import PREDICATE_TYPE, STATEMENT_TYPE
from builder.formats.release import RELEASE_SCHEMA
from builder.outputs import output_dir, release_dir, release_inputs
from builder.outputs.output_dir import why_not_ours

SERVICE = b"[Unit]\nDescription=QEMU Guest Agent\n"
# windows-msi-qemu-10.2's files, named by their version and machine as the recipe names them.
MSI = "qemu-ga-patched-10.2.2+qga1-windows-x86_64.msi"
EXE = "qemu-ga-patched-10.2.2+qga1-windows-x86_64.exe"


def make_output(
    directory: Path, recipe: str, files: dict[str, bytes], *, series: str = "10.0"
) -> Path:
    """An output directory exactly as `run` publishes one (records shaped by the tool)."""
    directory.mkdir(parents=True)
    artifacts = []
    for name, data in files.items():
        (directory / name).write_bytes(data)
        artifacts.append(
            {"name": name, "sha256": sha256_bytes(data), "size": len(data), "kind": "file"}
        )
    (directory / "SHA256SUMS").write_text(
        format_sha256sums({name: sha256_bytes(data) for name, data in files.items()})
    )
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "tool": {"name": "qga-builder", "version": "0.1.0"},
        "recipe": {"name": recipe, "path": f"recipes/{recipe}.yaml", "sha256": "a" * 64},
        "cache_key": sha256_bytes(recipe.encode()),
        "qemu_version": "10.0.13",
        "target": "windows" if recipe.startswith("windows") else "linux",
        "architecture": "x86_64",
        "source": {"kind": "debian", "version": "1:10.0.13+ds-0+deb13u1", "sha256": "b" * 64},
        "artifacts": artifacts,
        "series": {"version": "10.0.13", "series": series},
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": a["name"], "digest": {"sha256": a["sha256"]}} for a in artifacts],
        "predicateType": PREDICATE_TYPE,
        "predicate": {"buildDefinition": {"externalParameters": {"recipe": {"name": recipe}}}},
    }
    (directory / "provenance.intoto.json").write_text(json.dumps(statement, indent=2) + "\n")
    (directory / "logs").mkdir()
    (directory / "logs" / "01-source.log").write_text("fetched\n")
    return directory


@pytest.fixture
def outputs(tmp_path: Path) -> list[Path]:
    """Two CI jobs' outputs: a Linux recipe and a Windows one; plus a second Linux series that
    holds a file of the same name and bytes as the first (a service file, as recipes that
    write the loose ones do)."""
    out = tmp_path / "out"
    return [
        make_output(
            out / "linux-10.0",
            "linux-static-qemu-10.0",
            {"qemu-ga-10.0": b"\x7fELF 10.0", "qemu-guest-agent.service": SERVICE},
        ),
        make_output(
            out / "linux-10.2",
            "linux-static-qemu-10.2",
            {"qemu-ga-10.2": b"\x7fELF 10.2", "qemu-guest-agent.service": SERVICE},
            series="10.2",
        ),
        make_output(
            out / "windows",
            "windows-msi-qemu-10.2",
            {EXE: b"MZ exe", MSI: b"\xd0\xcf\x11\xe0 msi"},
            series="10.2",
        ),
    ]


def release(*args: object) -> int:
    return main(["release", *map(str, args)])


def snapshot(root: Path) -> dict[str, bytes | str]:
    return {
        str(path.relative_to(root)): path.read_bytes() if path.is_file() else "dir"
        for path in sorted(root.rglob("*"))
        if not path.is_symlink()
    }


def one_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err, err
    return err


def test_merge_makes_one_checked_release(tmp_path: Path, outputs: list[Path]) -> None:
    target = tmp_path / "release"
    assert release(*outputs, "--output", target) == 0
    names = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert names == [
        "SHA256SUMS",
        "manifests/linux-static-qemu-10.0.json",
        "manifests/linux-static-qemu-10.2.json",
        "manifests/windows-msi-qemu-10.2.json",
        "provenance.intoto.jsonl",
        "qemu-ga-10.0",
        "qemu-ga-10.2",
        EXE,
        MSI,
        "qemu-guest-agent.service",
        "release.json",
    ]
    # GNU sha256sum agrees with every line, and every file but SHA256SUMS has a line.
    checked = subprocess.run(
        ["sha256sum", "--strict", "-c", "SHA256SUMS"],
        cwd=target,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count(": OK") == len(names) - 1
    assert (target / "qemu-guest-agent.service").read_bytes() == SERVICE
    assert (target / "manifests/windows-msi-qemu-10.2.json").read_bytes() == (
        outputs[2] / "manifest.json"
    ).read_bytes()
    lines = (target / "provenance.intoto.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        json.loads((each / "provenance.intoto.json").read_text()) for each in outputs
    ]
    record = json.loads((target / "release.json").read_text())
    assert record["schema"] == RELEASE_SCHEMA
    assert [r["name"] for r in record["recipes"]] == [
        "linux-static-qemu-10.0",
        "linux-static-qemu-10.2",
        "windows-msi-qemu-10.2",
    ]
    assert record["recipes"][0]["cache_key"] == sha256_bytes(b"linux-static-qemu-10.0")
    assert record["recipes"][0]["source"]["sha256"] == "b" * 64
    assert [(r["series"], r["target"], r["architecture"]) for r in record["recipes"]] == [
        ("10.0", "linux", "x86_64"),
        ("10.2", "linux", "x86_64"),
        ("10.2", "windows", "x86_64"),
    ]
    shared = next(a for a in record["artifacts"] if a["name"] == "qemu-guest-agent.service")
    assert shared["recipes"] == ["linux-static-qemu-10.0", "linux-static-qemu-10.2"]
    assert why_not_ours(target) is None
    assert main(["verify", str(target)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".release.lock", "out", "release"]


def test_a_manifest_without_series_target_or_architecture_gives_none(
    tmp_path: Path, outputs: list[Path]
) -> None:
    """An output written before the manifest said what it was built for is still an input."""
    _edit_json(
        outputs[2] / "manifest.json",
        lambda m: [m.pop(key) for key in ("series", "target", "architecture")],
    )
    assert release(*outputs, "--output", tmp_path / "release") == 0
    record = json.loads((tmp_path / "release" / "release.json").read_text())
    windows = record["recipes"][2]
    assert (windows["series"], windows["target"], windows["architecture"]) == (None, None, None)


def test_the_same_inputs_give_the_same_bytes(tmp_path: Path, outputs: list[Path]) -> None:
    assert release(*outputs, "--output", tmp_path / "a") == 0
    assert release(*reversed(outputs), "--output", tmp_path / "b") == 0
    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")


def test_a_release_of_ours_is_replaced(tmp_path: Path, outputs: list[Path]) -> None:
    target = tmp_path / "release"
    assert release(*outputs, "--output", target) == 0
    assert release(outputs[2], "--output", target) == 0
    assert not (target / "qemu-ga-10.0").exists() and (target / EXE).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".release.lock", "out", "release"]


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (
            lambda d: (d / "qemu-ga-10.0").write_bytes(b"\x7fELF evil"),
            "qemu-ga-10.0 does not match its SHA256SUMS line",
        ),
        (lambda d: (d / "libevil.so").write_bytes(b"x"), "did not write: libevil.so"),
        (lambda d: (d / "qemu-ga-10.0").unlink(), "qemu-ga-10.0 is missing"),
        (lambda d: (d / "logs" / "run.sh").write_text("x"), "logs/run.sh is not a step log"),
        (lambda d: (d / "provenance.intoto.json").unlink(), "provenance.intoto.json is missing"),
        (lambda d: (d / "manifest.json").unlink(), "no manifest.json"),
        (lambda d: (d / "SHA256SUMS").write_text("nonsense\n"), "SHA256SUMS is not a checksum"),
        (
            lambda d: _edit_json(d / "manifest.json", lambda m: m["artifacts"][0].update(size=1)),
            "qemu-ga-10.0 is 9 bytes; manifest.json says 1",
        ),
        (
            lambda d: _edit_json(d / "manifest.json", lambda m: m["artifacts"].pop()),
            "only in SHA256SUMS: qemu-guest-agent.service",
        ),
        (
            lambda d: _edit_json(
                d / "manifest.json", lambda m: m["artifacts"][0].update(sha256="c" * 64)
            ),
            "give qemu-ga-10.0 different sha256",
        ),
        (
            lambda d: _edit_json(d / "manifest.json", lambda m: m.update(schema="other")),
            "manifest.json is not one qga-builder wrote",
        ),
        (
            lambda d: _edit_json(
                d / "manifest.json", lambda m: m["artifacts"][0].update(name="../../etc/x")
            ),
            "'../../etc/x' is not a file name",
        ),
        (
            lambda d: _edit_json(d / "manifest.json", lambda m: m["recipe"].update(name="../x")),
            "recipe.name is missing",
        ),
        (
            lambda d: _edit_json(d / "provenance.intoto.json", lambda s: s["subject"].pop()),
            "subjects do not match the artifacts (qemu-guest-agent.service)",
        ),
        (
            lambda d: _edit_json(
                d / "provenance.intoto.json",
                lambda s: s["subject"][0]["digest"].update(sha256="d" * 64),
            ),
            "subjects do not match the artifacts (qemu-ga-10.0)",
        ),
        (
            lambda d: (d / "provenance.intoto.json").write_text("[1, 2"),
            "provenance.intoto.json is not JSON",
        ),
    ],
    ids=[
        "bad-sum",
        "extra-file",
        "missing-artifact",
        "foreign-log",
        "no-provenance",
        "no-manifest",
        "bad-sums-file",
        "size-disagrees",
        "names-disagree",
        "sha-disagrees",
        "foreign-manifest",
        "path-as-name",
        "bad-recipe-name",
        "subject-missing",
        "subject-digest",
        "provenance-not-json",
    ],
)
def test_a_tampered_input_is_refused(
    tmp_path: Path, outputs: list[Path], capsys: pytest.CaptureFixture[str], tamper, expected: str
) -> None:
    tamper(outputs[0])
    before = snapshot(tmp_path)
    assert release(*outputs, "--output", tmp_path / "release") == 3
    err = one_error(capsys)
    assert f"release input {outputs[0]}: " in err and expected in err, err
    assert snapshot(tmp_path) == before  # nothing written: not even a lock


def _edit_json(path: Path, change) -> None:
    value = json.loads(path.read_text())
    change(value)
    path.write_text(json.dumps(value))


def test_links_and_special_files_are_refused(
    tmp_path: Path, outputs: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    linux = outputs[0]
    elsewhere = tmp_path / "agent"
    (linux / "qemu-ga-10.0").rename(elsewhere)
    (linux / "qemu-ga-10.0").symlink_to(elsewhere)  # same bytes, but through a link
    assert release(linux, "--output", tmp_path / "release") == 3
    assert "qemu-ga-10.0 is a symbolic link" in one_error(capsys)

    (linux / "qemu-ga-10.0").unlink()
    os.mkfifo(linux / "qemu-ga-10.0")  # would block a reader that does not check
    assert release(linux, "--output", tmp_path / "release") == 3
    assert "qemu-ga-10.0 is not a regular file" in one_error(capsys)

    link = tmp_path / "link-to-windows"
    link.symlink_to(outputs[2])
    assert release(link, "--output", tmp_path / "release") == 3
    assert f"release input {link}: it is a symbolic link" in one_error(capsys)
    assert not (tmp_path / "release").exists()


def test_sizes_are_bounded(
    tmp_path: Path,
    outputs: list[Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(release_inputs, "MAX_ARTIFACT_BYTES", 8)
    assert release(outputs[0], "--output", tmp_path / "release") == 3
    assert "qemu-ga-10.0 is larger than 8 bytes" in one_error(capsys)
    monkeypatch.setattr(release_inputs, "MAX_RECORD_BYTES", 100)
    assert release(outputs[2], "--output", tmp_path / "release") == 3
    assert "manifest.json is larger than 100 bytes" in one_error(capsys)


def test_two_files_under_one_name_conflict(
    tmp_path: Path, outputs: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    other = make_output(
        tmp_path / "out" / "linux-7.2",
        "linux-static-qemu-7.2",
        {"qemu-ga-7.2": b"\x7fELF 7.2", "qemu-guest-agent.service": b"[Unit]\nother\n"},
    )
    before = snapshot(tmp_path)
    assert release(*outputs, other, "--output", tmp_path / "release") == 3
    err = one_error(capsys)
    assert f"{outputs[0]} and {other} both hold qemu-guest-agent.service" in err, err
    assert snapshot(tmp_path) == before


def test_one_recipe_twice_is_refused(
    tmp_path: Path, outputs: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "copy-of-windows"
    shutil.copytree(outputs[2], copy)
    assert release(outputs[2], copy, "--output", tmp_path / "release") == 3
    assert "both outputs of recipe windows-msi-qemu-10.2" in one_error(capsys)
    assert release(outputs[2], outputs[2], "--output", tmp_path / "release") == 2
    assert "is given twice" in one_error(capsys)


def test_a_release_is_not_an_input(
    tmp_path: Path, outputs: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert release(*outputs, "--output", tmp_path / "release") == 0
    assert release(tmp_path / "release", "--output", tmp_path / "again") == 3
    assert "is a release directory" in one_error(capsys)
    # `release out/* --output out/release` run a second time: the output is among the inputs.
    assert release(*outputs, outputs[0].parent, "--output", outputs[0].parent / "r") == 2
    assert "overlap" in one_error(capsys)


def test_a_foreign_output_directory_is_untouched(
    tmp_path: Path, outputs: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    documents = tmp_path / "Documents"
    documents.mkdir()
    (documents / "letter.txt").write_text("keep me")
    before = snapshot(tmp_path)
    assert release(*outputs, "--output", documents) == 9
    assert "refusing to replace it" in one_error(capsys)
    assert snapshot(tmp_path) == before


def test_an_edited_release_is_not_replaced(
    tmp_path: Path, outputs: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "release"
    assert release(*outputs, "--output", target) == 0
    (target / "notes.txt").write_text("mine")
    assert why_not_ours(target) == "its files and SHA256SUMS disagree (notes.txt)"
    assert release(outputs[2], "--output", target) == 9
    one_error(capsys)
    (target / "notes.txt").unlink()
    (target / "manifests" / "windows-msi-qemu-10.2.json").write_text("{}")
    assert "manifests/windows-msi-qemu-10.2.json differs" in str(why_not_ours(target))
    assert release(outputs[2], "--output", target) == 9
    one_error(capsys)
    assert (target / "qemu-ga-10.0").exists()


def test_an_interrupted_merge_leaves_nothing(
    tmp_path: Path, outputs: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "release"
    assert release(outputs[2], "--output", target) == 0
    previous = snapshot(target)
    copies = []
    real_copy = release_dir._copy_verified

    def copy_then_interrupt(*args: object) -> None:
        real_copy(*args)
        copies.append(args)
        if len(copies) == 3:
            raise Interrupted(15)

    monkeypatch.setattr(release_dir, "_copy_verified", copy_then_interrupt)
    assert release(*outputs, "--output", target) == 143
    assert len(copies) == 3
    assert snapshot(target) == previous  # the previous release stands as it was
    assert sorted(p.name for p in tmp_path.iterdir()) == [".release.lock", "out", "release"]


def test_an_input_changed_during_the_merge_is_caught(
    tmp_path: Path,
    outputs: list[Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Checked, then swapped before the copy: the release holds only the checked bytes."""
    import builder.commands.release as command

    real_merge = command.merge

    def merge_then_swap(inputs: list) -> object:
        merged = real_merge(inputs)
        (outputs[2] / EXE).write_bytes(b"MZ swapped")
        return merged

    monkeypatch.setattr(command, "merge", merge_then_swap)
    assert release(*outputs, "--output", tmp_path / "release") == 3
    assert f"{EXE} changed while it was being copied" in one_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".release.lock", "out"]


def test_verify_checks_a_release_directory(tmp_path: Path, outputs: list[Path]) -> None:
    target = tmp_path / "release"
    assert release(*outputs, "--output", target) == 0
    (target / "manifests" / "planted.json").write_text("{}")
    assert main(["verify", str(target)]) == 10
    (target / "manifests" / "planted.json").unlink()
    (target / "release.json").write_text("{}")
    assert main(["verify", str(target)]) == 10


def test_a_crash_mid_publish_is_repaired(tmp_path: Path, outputs: list[Path]) -> None:
    """Killed between moving the old release aside and the new one in: the next run (or
    `clean`) puts the complete release back under its name; a staging directory goes."""
    target = tmp_path / "release"
    assert release(*outputs, "--output", target) == 0
    before = snapshot(target)
    target.rename(tmp_path / ".release.old-abcd1234")
    staging = tmp_path / ".release.tmp-efgh5678"
    staging.mkdir()
    (staging / output_dir.STAGING_MARKER).write_text("efgh5678\n")
    said = output_dir.recover(target)
    assert any("restore" in line for line in said) and snapshot(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".release.lock", "out", "release"]


def test_the_bundle_has_one_line_per_statement(tmp_path: Path, outputs: list[Path]) -> None:
    """A statement holding U+2028 (a line break to some readers) stays on its line."""
    _edit_json(
        outputs[0] / "provenance.intoto.json",
        lambda s: s["predicate"].update(note="a\u2028b\nc"),
    )
    assert release(*outputs, "--output", tmp_path / "release") == 0
    text = (tmp_path / "release" / "provenance.intoto.jsonl").read_text()
    assert len(text.splitlines()) == 3 and text.isascii()
    assert json.loads(text.splitlines()[0])["predicate"]["note"] == "a\u2028b\nc"
