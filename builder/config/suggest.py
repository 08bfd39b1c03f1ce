"""'Did you mean ...?': the nearest of the names a word could have meant (difflib)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path

RECIPE_SUFFIXES = (".yaml", ".yml")
RECIPES_DIR = Path("recipes")


def close_match(word: str, candidates: Iterable[str]) -> str | None:
    found = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return found[0] if found else None


def _recipe_files(directory: Path) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir() if p.suffix in RECIPE_SUFFIXES and p.is_file())
    except OSError:
        return []


def recipe_like(missing: Path) -> Path | None:
    """An existing recipe file the user probably meant by a path that does not exist:
    `linux-static` -> recipes/linux-static.yaml, `recipes/linux-statc.yaml` -> the right one."""
    stem = missing.stem if missing.suffix in RECIPE_SUFFIXES else missing.name
    places = list(dict.fromkeys([missing.parent, RECIPES_DIR]))  # as given, then ./recipes
    for place in places:  # the exact name with a suffix first, then a near one
        for suffix in RECIPE_SUFFIXES:
            candidate = place / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    for place in places:
        files = {path.stem: path for path in _recipe_files(place)}
        guess = close_match(stem, files)
        if guess is not None:
            return files[guess]
    return None
