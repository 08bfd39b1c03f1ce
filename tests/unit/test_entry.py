"""`python -m builder` as the card types it: from a checkout, with no virtualenv active."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]


def test_a_python_without_the_dependencies_runs_the_checkouts_venv() -> None:
    assert (CHECKOUT / ".venv" / "bin" / "python").is_file(), "scripts/setup.sh makes .venv"
    # -S: no site-packages, so none of the dependencies, as with a system python3.
    result = subprocess.run(
        [sys.executable, "-S", "-m", "builder", "--version"],
        cwd=CHECKOUT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("qga-builder ")


def test_without_a_venv_it_says_how_to_make_one(tmp_path: Path) -> None:
    shutil.copytree(CHECKOUT / "builder", tmp_path / "builder")
    result = subprocess.run(
        [sys.executable, "-S", "-m", "builder", "run", "recipes/linux-static.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "lacks the module" in result.stderr and "scripts/setup.sh" in result.stderr
