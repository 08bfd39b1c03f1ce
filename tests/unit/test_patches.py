"""Patch digests are checked before any container, and `patch` failures name file and hunk."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from builder.boxes.container_commands import apply_patch
from builder.config.layout import Layout
from builder.config.plan import PatchPlan
from builder.errors import InputError, PatchError
from builder.stages.patches import check_patches, describe_failure

PATCH = """\
--- a/dir/file.c
+++ b/dir/file.c
@@ -1,3 +1,3 @@
 one
-two
+TWO
 three
"""


def test_digest_mismatch_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "0001-x.patch"
    path.write_text(PATCH)
    with pytest.raises(InputError, match=r"patches\[0\]: sha256 mismatch"):
        check_patches([PatchPlan(path, "0" * 64)])


def test_missing_patch(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        check_patches([PatchPlan(tmp_path / "nope.patch", "0" * 64)])


def test_series_order_is_kept(tmp_path: Path) -> None:
    plans = []
    for name in ("b.patch", "a.patch"):
        path = tmp_path / name
        path.write_text(PATCH)
        plans.append(PatchPlan(path, hashlib.sha256(PATCH.encode()).hexdigest()))
    checked = check_patches(plans)
    assert [c.container_name for c in checked] == ["0000-b.patch", "0001-a.patch"]


def _patch_output(tmp_path: Path, content: str) -> list[str]:
    """Run the exact patch command the build container runs, on a small tree."""
    layout = Layout(str(tmp_path / "root"))
    tree = Path(layout.src)
    (tree / "dir").mkdir(parents=True)
    (tree / "dir" / "file.c").write_text(content)
    Path(layout.patches).mkdir(parents=True)
    (Path(layout.patches) / "0000-p.patch").write_text(PATCH)
    command = apply_patch(layout, "0000-p.patch")
    result = subprocess.run(command.argv, cwd=command.workdir, capture_output=True, text=True)
    assert result.returncode != 0
    return (result.stdout + result.stderr).splitlines()


def test_failed_hunk_is_named(tmp_path: Path) -> None:
    lines = _patch_output(tmp_path, "one\nsomething else\nthree\n")
    assert describe_failure(lines) == "dir/file.c: hunk #1 (at line 1) failed"


def test_already_applied(tmp_path: Path) -> None:
    lines = _patch_output(tmp_path, "one\nTWO\nthree\n")
    assert "dir/file.c: already applied" in describe_failure(lines)


def test_missing_file(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tmp_path / "p.patch").write_text(PATCH)
    result = subprocess.run(
        ["patch", "-p1", "--forward", "--batch", "-i", str(tmp_path / "p.patch")],
        cwd=tree,
        capture_output=True,
        text=True,
    )
    assert "dir/file.c: not in the source tree" in describe_failure(
        (result.stdout + result.stderr).splitlines()
    )


def test_the_hook_is_shipped_with_the_runs_patches(tmp_path: Path) -> None:
    """Only the part of a patch that changes the hook is applied to it, on the host; a part
    that does not apply stops the run, naming the patch."""
    from builder.stages.patches import patched_file

    name = "scripts/qemu-guest-agent/fsfreeze-hook"
    hook = '#!/bin/sh\ntouch "$LOGFILE" &>/dev/null\nexit 0\n'
    patch = tmp_path / "0004-hook.patch"
    patch.write_text(
        "Subject: two files\n---\n"
        "--- a/qga/commands.c\n+++ b/qga/commands.c\n@@ -1 +1 @@\n-old\n+new\n"
        f"--- a/{name}\n+++ b/{name}\n@@ -1,3 +1,3 @@\n #!/bin/sh\n"
        '-touch "$LOGFILE" &>/dev/null\n+touch "$LOGFILE" >/dev/null 2>&1\n exit 0\n'
    )
    fixed = patched_file(hook, name, [patch])
    assert fixed == '#!/bin/sh\ntouch "$LOGFILE" >/dev/null 2>&1\nexit 0\n'
    assert patched_file(hook, name, []) == hook
    with pytest.raises(PatchError, match=r"0004-hook.patch does not apply to scripts/"):
        patched_file("#!/bin/sh\nsomething else\n", name, [patch])
