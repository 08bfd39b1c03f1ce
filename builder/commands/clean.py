"""`qga-builder clean`: remove what crashed or killed runs left behind, old build images and
the cache volumes of images that are gone.

Containers are found by label; a container whose owning process still runs on this host is left
alone, so `clean` is safe beside a running build. Staging directories are matched by the tool's
exact naming and removed under their output's lock, only when the tool can prove it made them.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import time
from collections import defaultdict
from pathlib import Path

from builder import log
from builder.boxes.build_box import BUILD_CACHE, ccache_volume
from builder.engine import (
    LABEL_BASE,
    LABEL_IMAGE,
    LABEL_KIND,
    LABEL_OWNER,
    LABEL_RUN,
    ContainerRecord,
    Engine,
    ImageRecord,
)
from builder.errors import OutputError
from builder.host.cache import Cache
from builder.host.files import is_real_dir
from builder.host.locks import exclusive
from builder.outputs import output_dir as output

KEEP_RUN_LOGS = 20
GUEST_ENTRY = re.compile(r"(?:systemd|sysvinit|systemd-arm64)-([0-9a-f]{24})")  # guest, image id
STALE_TMP_SECONDS = 3600


def cmd_clean(args: argparse.Namespace) -> int:
    with Engine() as engine:
        removed = clean(
            engine,
            Cache.default(),
            output_root=args.output_root,
            keep=args.keep,
            repository=args.repository,
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
    engine: Engine,
    cache: Cache,
    *,
    output_root: Path,
    keep: int,
    dry_run: bool,
    repository: str | None = None,
) -> dict[str, list[str]]:
    removed: dict[str, list[str]] = {
        "containers": [],
        "staging": [],
        "locks": [],
        "images": [],
        "caches": [],
        "guests": [],
        "logs": [],
    }
    for container in engine.containers(LABEL_OWNER):
        verdict = _container_verdict(engine, container)
        if verdict is not None:
            log.get_logger().info("left alone", container=container.name, reason=verdict)
            continue
        removed["containers"].append(container.name)
        if not dry_run:
            engine.remove_container(container.id)
    for line in _clean_staging(output_root, dry_run, removed["locks"]):
        if line.startswith("leave "):
            log.get_logger().info(line)
        else:
            removed["staging"].append(line)
    # Newest N per Dockerfile and base: each QEMU series' image (its own Debian base) counts
    # on its own, so cleaning never takes the image one series builds in for another's.
    groups: dict[tuple[str, str], list[ImageRecord]] = defaultdict(list)
    for image in engine.images(f"{LABEL_KIND}=build"):
        name = image.tags[0].rsplit(":", 1)[0] if image.tags else "<none>"
        if repository is None or name == repository:
            groups[(name, image.labels.get(LABEL_BASE, ""))].append(image)
    gone: set[str] = set()
    for images in groups.values():
        images.sort(key=lambda image: image.created, reverse=True)
        for image in images[keep:]:
            removed["images"].append(", ".join(image.tags or [image.id]))
            gone.add(image.id)
            if not dry_run:
                engine.remove_image(image.id)
    removed["caches"] = _clean_cache_volumes(engine, gone, dry_run)
    removed["guests"] = _clean_guest_disks(engine, cache, gone, dry_run)
    runs = sorted(cache.runs.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in runs[KEEP_RUN_LOGS:]:
        removed["logs"].append(str(path))
        if not dry_run:
            shutil.rmtree(path, ignore_errors=True)
    for path in cache.dir("tmp").iterdir():
        if time.time() - path.stat().st_mtime > STALE_TMP_SECONDS and not dry_run:
            path.unlink(missing_ok=True)
    return removed


def _clean_cache_volumes(engine: Engine, gone: set[str], dry_run: bool) -> list[str]:
    """Build-cache volumes whose build image is gone (or goes now): no build can use them
    again. Only volumes the tool made (its kind label, and the name it gives the image's)."""
    removed = []
    for volume in engine.volumes(f"{LABEL_KIND}={BUILD_CACHE}"):
        image = volume.labels.get(LABEL_IMAGE, "")
        if not image or volume.name != ccache_volume(image):
            log.get_logger().info("left alone", volume=volume.name, reason="not named as ours")
            continue
        if image not in gone and engine.inspect_image(image) is not None:
            continue
        reason = None if dry_run else engine.remove_volume(volume.name)
        if reason is not None:
            log.get_logger().info("left alone", volume=volume.name, reason=reason)
            continue
        removed.append(volume.name)
    return removed


def _clean_guest_disks(engine: Engine, cache: Cache, gone: set[str], dry_run: bool) -> list[str]:
    """vm-test's cached guest disks (~700 MB each) whose guest image is gone (or goes now):
    vm-test never boots them again (it keys a disk by its image's id). Only entries the tool
    made: its naming, a real directory, and the marker holding the image id it wrote when the
    disk was complete; checked again under the disk's lock before anything goes."""
    removed = []
    for entry in sorted(cache.dir("vm/guests").iterdir()):
        if _orphan_guest(engine, entry, gone) is None:
            continue
        if dry_run:
            removed.append(str(entry))
            continue
        with exclusive(cache.lock_path(f"guest-{entry.name}"), f"guest {entry.name}", _quiet):
            if _orphan_guest(engine, entry, gone) is not None:
                shutil.rmtree(entry)
                removed.append(str(entry))
    return removed


def _orphan_guest(engine: Engine, entry: Path, gone: set[str]) -> str | None:
    """The image id of a guest disk entry of ours whose image is gone; else None."""
    named = GUEST_ENTRY.fullmatch(entry.name)
    if named is None or not is_real_dir(entry):
        return None
    marker = entry / ".complete"
    try:
        if marker.is_symlink() or not marker.is_file():
            return None
        image = marker.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        log.get_logger().info("left alone", guest=str(entry), reason="its marker is unreadable")
        return None
    if not image.startswith("sha256:") or image[7:31] != named.group(1):
        log.get_logger().info("left alone", guest=str(entry), reason="not marked as ours")
        return None
    if image not in gone and engine.inspect_image(image) is not None:
        return None
    return image


def _quiet(line: str) -> None:
    log.get_logger().info(line)


def _container_verdict(engine: Engine, container: ContainerRecord) -> str | None:
    """None when the container is provably a dead run's of this host; otherwise why not.

    Proof: the owner label was set when the tool made the container (its image carries no such
    label to inherit), its name is the tool's for the labelled run, and the owning process,
    on this host, is gone. A container of another host on a shared engine is never removed:
    this host cannot see whether that run is still going.
    """
    owner = container.labels.get(LABEL_OWNER, "")
    run = container.labels.get(LABEL_RUN, "")
    if not re.fullmatch(rf"qga-builder-{re.escape(run)}-[0-9a-f]{{6}}", container.name) or not run:
        return "its name is not one qga-builder gives its containers"
    image = engine.inspect_image(container.image) if container.image else None
    if image is not None and LABEL_OWNER in image.labels:
        return "its owner label comes from its image, not from qga-builder"
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return f"owned by a run on host {host!r}; remove it from there (or by hand)"
    if not pid.isdigit():
        return "its owner label names no process"
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return "its run is still going"
    return "its run is still going"


def _clean_staging(output_root: Path, dry_run: bool, locks: list[str] | None = None) -> list[str]:
    """Leftovers by exact name (`.NAME.tmp-RUN`, `.NAME.old-RUN`), under their output's lock:
    an interrupted publish is completed or undone, and only directories the tool can prove it
    made (its staging marker, or a complete output of its own) are removed. A dry run says
    exactly the same, doing nothing."""
    said: list[str] = []
    for final in sorted({final for _, final in output.all_leftovers(output_root)}):
        planned = output.recover(final, dry_run=True)
        if dry_run or all(line.startswith("leave ") for line in planned):
            # Nothing provably ours: do not even open (and so truncate) a lock of that name.
            said += planned
            continue
        try:
            with output.OutputLock(final) as lock:
                said += output.recover(final)
                if not os.path.lexists(final) and not output.leftovers(final):
                    lock.path.unlink(missing_ok=True)  # its lock belongs to nothing now
                    (locks if locks is not None else said).append(f"remove {lock.path}")
        except OutputError as exc:  # held by a running run, or an odd lock file
            said.append(f"leave {final}'s leftovers alone: {exc.message}")
    return said
