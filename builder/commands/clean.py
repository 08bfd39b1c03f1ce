"""`qga-builder clean`: remove what crashed or killed runs left behind.

Containers are found by label; a container whose owning process still runs on this host is left
alone, so `clean` is safe beside a running build. Staging directories are matched by the tool's
exact naming and removed under their output's lock, only when the tool can prove it made them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import time
from collections import defaultdict
from pathlib import Path

from builder import log
from builder.engine import LABEL_KIND, LABEL_OWNER, LABEL_TOOL, Engine, ImageRecord
from builder.errors import OutputError
from builder.host.cache import Cache
from builder.stages import output_dir as output

KEEP_RUN_LOGS = 20
STALE_TMP_SECONDS = 3600


def cmd_clean(args: argparse.Namespace) -> int:
    with Engine() as engine:
        removed = clean(
            engine,
            Cache.default(),
            output_root=args.output_root,
            keep=args.keep,
            dry_run=args.dry_run,
        )
    verb = "would remove" if args.dry_run else "removed"
    logger = log.get_logger()
    for kind, items in removed.items():
        for item in items:
            logger.info(verb, kind=kind, item=item)
    logger.info("clean done", **{kind: len(items) for kind, items in removed.items()})
    return 0


def clean(
    engine: Engine, cache: Cache, *, output_root: Path, keep: int, dry_run: bool
) -> dict[str, list[str]]:
    removed: dict[str, list[str]] = {"containers": [], "staging": [], "images": [], "logs": []}
    for container in engine.containers(LABEL_TOOL):
        if _owner_alive(container.labels.get(LABEL_OWNER, "")):
            continue
        removed["containers"].append(container.name)
        if not dry_run:
            engine.remove_container(container.id)
    removed["staging"] += _clean_staging(output_root, dry_run)
    by_repository: dict[str, list[ImageRecord]] = defaultdict(list)
    for image in engine.images(f"{LABEL_KIND}=build"):
        repository = image.tags[0].rsplit(":", 1)[0] if image.tags else "<none>"
        by_repository[repository].append(image)
    for images in by_repository.values():
        images.sort(key=lambda image: image.created, reverse=True)
        for image in images[keep:]:
            removed["images"].append(", ".join(image.tags or [image.id]))
            if not dry_run:
                engine.remove_image(image.id)
    runs = sorted(cache.runs.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in runs[KEEP_RUN_LOGS:]:
        removed["logs"].append(str(path))
        if not dry_run:
            shutil.rmtree(path, ignore_errors=True)
    for path in cache.dir("tmp").iterdir():
        if time.time() - path.stat().st_mtime > STALE_TMP_SECONDS and not dry_run:
            path.unlink(missing_ok=True)
    return removed


def _owner_alive(owner: str) -> bool:
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_staging(output_root: Path, dry_run: bool) -> list[str]:
    """Leftovers by exact name (`.NAME.tmp-RUN`, `.NAME.old-RUN`), under their output's lock:
    an interrupted publish is completed or undone, and only directories the tool can prove it
    made (its staging marker, or a complete output of its own) are removed."""
    said: list[str] = []
    finals = sorted({final for _, final in output.all_leftovers(output_root)})
    for final in finals:
        if dry_run:
            said += [
                str(path)
                for path in output.leftovers(final)
                if output.why_not_ours(path) is None or output.holds_own_marker(path)
            ]
            continue
        try:
            with output.OutputLock(final):
                said += output.recover(final)
        except OutputError as exc:  # held by a running run, or an odd lock file
            said.append(f"left {final}'s leftovers alone: {exc.message}")
    return said
