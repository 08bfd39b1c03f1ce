"""`bump --write` on a lock behind its suite: the build image is made anew on the real engine
(no cached layer, from the mirror's trixie) and the lock written from it.

The recipe builds in its own copy of Dockerfile.linux (one comment more), so the image made
anew is its own, never the one the other tests build in (about 30 s here: the base is kept).
"""

from __future__ import annotations

import json
from pathlib import Path

from builder.stages import toolchain
from tests.helpers import run_cli, write_variant

OLD_GLIB = "2.0-1"  # older than any libglib2.0-dev trixie lists


def test_write_remakes_the_lock_from_an_image_made_anew(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "recipes").mkdir(parents=True)
    (project / "pyproject.toml").write_text("")
    recipe = write_variant(project / "recipes", "bump-lock")
    dockerfile = project / "recipes" / "Dockerfile.linux"
    dockerfile.write_text(dockerfile.read_text() + "# bump-lock test: an image of its own\n")
    lock = recipe.with_suffix(".lock")
    lock.write_text(toolchain.format_lock({"libglib2.0-dev": f"{OLD_GLIB} amd64"}))

    dry = run_cli("bump", str(recipe), "--json", "--allow-expired-index")
    assert dry.returncode == 14, dry.stderr[-2000:]
    (stale,) = json.loads(dry.stdout)["locks"]
    assert stale["status"] == "stale"
    suite_glib = stale["suite_versions"]["libglib2.0-dev"]

    done = run_cli("bump", str(recipe), "--write", "--json", "--allow-expired-index")
    assert done.returncode == 0, done.stderr[-3000:]
    (remade,) = json.loads(done.stdout)["locks"]
    assert remade["status"] == "remade", remade
    assert "building qga-builder/dockerfile.linux" in done.stderr
    assert "anew, no cached layer" in done.stderr
    locked = toolchain.read_lock(lock)
    assert locked["libglib2.0-dev"].split()[0] == suite_glib
    assert len(locked) > 100  # every package of the image, as `lock` writes it

    again = run_cli("bump", str(recipe), "--json", "--allow-expired-index")
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["locks"][0]["status"] == "current"
