"""SHA256SUMS: our writer's output is what GNU sha256sum -c accepts, and the parser reads both."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from builder.formats.checksums import digest_tree, format_sha256sums, parse_sha256sums, sha256_json


def test_sha256sum_accepts_our_file(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"\x00\x01")
    (tmp_path / "b file.txt").write_text("hello\n")
    (tmp_path / "SHA256SUMS").write_text(
        format_sha256sums(digest_tree(tmp_path, ["a.bin", "b file.txt"]))
    )
    result = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (tmp_path / "a.bin").write_bytes(b"\x00\x02")
    result = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode != 0 and "a.bin: FAILED" in result.stdout


def test_roundtrip_and_binary_mode() -> None:
    digests = {"x": "a" * 64, "y": "b" * 64}
    assert parse_sha256sums(format_sha256sums(digests)) == digests
    assert parse_sha256sums(f"{'c' * 64} *z\n") == {"z": "c" * 64}


def test_sorted_output() -> None:
    text = format_sha256sums({"b": "1" * 64, "a": "2" * 64})
    assert text.splitlines()[0].endswith("  a")


@pytest.mark.parametrize("line", ["nonsense", "abc  file", f"{'g' * 64}  f", f"{'a' * 64}  "])
def test_malformed_lines(line: str) -> None:
    with pytest.raises(ValueError, match="line 1"):
        parse_sha256sums(line + "\n")


def test_names_with_newlines_are_refused() -> None:
    with pytest.raises(ValueError):
        format_sha256sums({"a\nb": "a" * 64})


def test_json_digest_ignores_key_order() -> None:
    assert sha256_json({"a": 1, "b": [1, 2]}) == sha256_json({"b": [1, 2], "a": 1})
    assert sha256_json({"a": 1}) != sha256_json({"a": 2})
