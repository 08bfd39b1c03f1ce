"""Stage `reuse` and the artifact cache.

A run whose inputs are all unchanged (plan key, source digest, patches, base and build image ids,
tool version) takes the artifacts of the last successful run with the same key, checked against
their SHA256SUMS, and starts no container. Entries live under CACHE/artifacts/KEY/ in the shape of
an output directory (so `why_not_ours` checks them), with KEY.json beside each saying which run
stored it and from what inputs; `last-RECIPE.json` lets a miss say which input changed.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from builder import __version__
from builder.formats.checksums import format_sha256sums, sha256_json
from builder.formats.manifest import LOGS_DIR, SIGNATURE_NAME, SUMS_NAME
from builder.log import StepOutput, get_logger
from builder.outputs.output_dir import STAGING_MARKER, why_not_ours
from builder.run_context import RunContext
from builder.stages import authenticode, toolchain

KEPT_PER_RECIPE = 3  # entries kept per recipe name, newest first: a few MB to tens of MB each
_SOURCE_DIGESTS = ("kind", "url", "tag", "commit", "sha256", "tree_tar_sha256", "subprojects")


@dataclass(frozen=True)
class CacheHit:
    key: str
    directory: Path
    manifest: dict[str, Any]
    from_run: str
    stored: str


# What an entry holds; a new layout misses the old entries (2: the run's sbom.spdx.json).
ENTRY_LAYOUT = 2


def inputs(ctx: RunContext) -> dict[str, Any]:
    """Every input the artifacts depend on, by digest; the key is their digest."""
    components = {
        "tool_version": __version__,
        "entry_layout": ENTRY_LAYOUT,
        "plan": ctx.run_key,
        "recipe_sha256": ctx.plan.recipe_sha256,
        "source": {k: ctx.source.record[k] for k in _SOURCE_DIGESTS if k in ctx.source.record},
        "patches": {c.plan.name: c.plan.sha256 for c in ctx.checked_patches},
        "configure": list(ctx.configure_flags),
        "base_image": ctx.base.image_id,
        "build_image": ctx.build_image.image_id,
    }
    if ctx.code_signer is not None and authenticode.applies(ctx.plan.artifacts):
        # Signed Windows files: by the certificate, never the key (nor a time-stamping URL,
        # which may hold a password: its digest).
        components["authenticode"] = ctx.code_signer.identity()
    return components


def lookup(ctx: RunContext, output: StepOutput) -> None:
    """Stage `reuse`: a hit makes the build stages skip and `publish` take the entry's files."""
    components = inputs(ctx)
    key = sha256_json(components)
    log = get_logger(recipe=ctx.plan.recipe_name)
    if not ctx.use_cache:
        ctx.cache_record = {"hit": False, "key": key, "reason": "--no-cache"}
        output.line("artifact cache: not used (--no-cache)")
        return
    root = ctx.cache.dir("artifacts")
    entry, meta = root / key, _read_json(root / f"{key}.json")
    if not entry.exists():
        reason = what_changed(_read_json(root / f"last-{ctx.plan.recipe_name}.json"), components)
    elif (
        meta is None or (problem := why_not_ours(entry)) is not None or (entry / LOGS_DIR).exists()
    ):
        problem = "its record is missing" if meta is None else (problem or "it holds logs")
        reason = f"cache entry {key[:12]} was changed ({problem}): not served, rebuilding"
        _remove_entry(root, key)
        log.warning("artifact cache entry refused", key=key[:12], problem=problem)
    else:
        manifest = _read_json(entry / "manifest.json") or {}
        if ctx.plan.locked:  # the stored run's image is this run's (its id is in the key)
            packages = (manifest.get("environment") or {}).get("packages") or {}
            toolchain.check_lock(ctx.plan.lock_path, packages)
            output.line(f"packages of the cached run's image match {ctx.plan.lock_path}")
        ctx.cache_hit = CacheHit(key, entry, manifest, str(meta["run"]), str(meta["stored"]))
        ctx.cache_record = {
            "hit": True,
            "key": key,
            "from_run": meta["run"],
            "stored": meta["stored"],
        }
        log.info("artifact cache hit", key=key[:12], from_run=meta["run"])
        output.line(f"cache hit: artifacts of run {meta['run']} ({meta['stored']}), checked")
        return
    ctx.cache_record = {"hit": False, "key": key, "reason": reason}
    log.info("artifact cache miss", key=key[:12], reason=reason)
    output.line(f"cache miss: {reason}")


def what_changed(last: dict[str, Any] | None, now: dict[str, Any]) -> str:
    """The inputs that differ from the last stored run of this recipe, in words."""
    if last is None or not isinstance(last.get("inputs"), dict):
        return "no earlier run of this recipe is cached"
    before = last["inputs"]
    changed = [name for name in now if name != "plan" and before.get(name) != now[name]]
    if not changed:
        if before.get("plan") != now["plan"]:
            return "the plan changed (a recipe field, an override or the series' choices)"
        return "the entry of the last run is gone"
    return "changed since the last cached run: " + ", ".join(
        _describe(name, before.get(name), now[name]) for name in changed
    )


def _describe(name: str, before: Any, now: Any) -> str:
    if isinstance(now, str) and isinstance(before, str):
        return f"{name} ({_short(before)} -> {_short(now)})"
    if isinstance(now, dict) and isinstance(before, dict):
        keys = sorted(k for k in set(now) | set(before) if now.get(k) != before.get(k))
        return f"{name} ({', '.join(keys)})"
    return name


def _short(value: str) -> str:
    return value.removeprefix("sha256:")[:12] or "none"


def store(ctx: RunContext, published: Path) -> None:
    """Keep a copy of a fresh output, checked and about to be sealed (without its logs),
    under the run's key. A failure here costs the next run a rebuild, never this run its
    result. The entry holds no OpenPGP or DSSE signature, its SHA256SUMS listing the artifacts
    only: a run served from it signs (or not) with its own keys. Authenticode signatures are in
    the artifacts themselves: such entries are keyed by the certificate (see `inputs`)."""
    if ctx.cache_hit is not None or "key" not in ctx.cache_record:
        return
    key = str(ctx.cache_record["key"])
    root = ctx.cache.dir("artifacts")
    staging = root / f".tmp-{ctx.run_id}"
    try:
        shutil.rmtree(staging, ignore_errors=True)
        ignored = shutil.ignore_patterns(LOGS_DIR, SIGNATURE_NAME, STAGING_MARKER)
        shutil.copytree(published, staging, ignore=ignored)
        sums = {artifact.name: artifact.sha256 for artifact in ctx.artifacts}
        (staging / SUMS_NAME).write_text(format_sha256sums(sums))
        _remove_entry(root, key)
        os.rename(staging, root / key)
        record = {
            "recipe": ctx.plan.recipe_name,
            "run": ctx.run_id,
            "stored": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "inputs": inputs(ctx),
        }
        _write_json(root / f"{key}.json", record)
        _write_json(root / f"last-{ctx.plan.recipe_name}.json", record)
        _prune(root, ctx.plan.recipe_name)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        get_logger().warning("could not store the artifacts in the cache", error=str(exc))


def restore(ctx: RunContext) -> None:
    """Copy a hit's files into the staging directory (publish then writes this run's records)."""
    assert ctx.cache_hit is not None
    for path in sorted(ctx.cache_hit.directory.iterdir()):
        if path.is_file() and not path.is_symlink() and path.name != SIGNATURE_NAME:
            shutil.copy2(path, ctx.staging / path.name)


def _prune(root: Path, recipe: str) -> None:
    mine = []
    for path in root.glob("*.json"):
        record = _read_json(path)
        if path.name.startswith("last-") or not record or record.get("recipe") != recipe:
            continue
        mine.append((str(record.get("stored", "")), path.stem))
    for _, key in sorted(mine, reverse=True)[KEPT_PER_RECIPE:]:
        _remove_entry(root, key)


def _remove_entry(root: Path, key: str) -> None:
    shutil.rmtree(root / key, ignore_errors=True)
    (root / f"{key}.json").unlink(missing_ok=True)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _write_json(path: Path, value: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)
