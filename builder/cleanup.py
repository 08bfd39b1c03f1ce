"""`qga-builder clean`: remove what crashed or killed runs left behind.

Containers are found by label; a container whose owning process still runs on this host is left
alone, so `clean` is safe beside a running build. Staging directories are removed only when no
run holds their output's lock.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import time
from collections import defaultdict
from pathlib import Path

from builder.cache import Cache
from builder.engine import LABEL_KIND, LABEL_OWNER, LABEL_TOOL, Engine
from builder.output import stale_staging_dirs

KEEP_RUN_LOGS = 20
STALE_TMP_SECONDS = 3600


def clean(
    engine: Engine, cache: Cache, *, output_root: Path, keep: int, dry_run: bool
) -> dict[str, list[str]]:
    removed: dict[str, list[str]] = {"containers": [], "staging": [], "images": [], "logs": []}
    for container in engine.containers(LABEL_TOOL):
        if _owner_alive(container.get("Labels", {}).get(LABEL_OWNER, "")):
            continue
        name = container["Names"][0].lstrip("/") if container.get("Names") else container["Id"]
        removed["containers"].append(name)
        if not dry_run:
            engine.remove_container(container["Id"])
    for path in stale_staging_dirs(output_root):
        if _lock_held(path):
            continue
        removed["staging"].append(str(path))
        if not dry_run:
            shutil.rmtree(path, ignore_errors=True)
    by_repository: dict[str, list[dict]] = defaultdict(list)
    for image in engine.images(f"{LABEL_KIND}=build"):
        tags = image.get("RepoTags") or ["<none>:"]
        by_repository[tags[0].rsplit(":", 1)[0]].append(image)
    for images in by_repository.values():
        images.sort(key=lambda image: image.get("Created", 0), reverse=True)
        for image in images[keep:]:
            removed["images"].append(", ".join(image.get("RepoTags") or [image["Id"]]))
            if not dry_run:
                engine.remove_image(image["Id"])
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


def _lock_held(staging: Path) -> bool:
    """Is the output this staging directory belongs to locked by a running run?"""
    final_name = staging.name[1:].split(".tmp-")[0].split(".old-")[0]
    lock = staging.parent / f".{final_name}.lock"
    if not lock.exists():
        return False
    with lock.open("r") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False
