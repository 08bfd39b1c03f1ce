"""`clean` removes only containers it can prove a dead run of this host made (decided on the
engine's records; the integration tests remove real ones)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from builder.commands.clean import clean
from builder.engine import LABEL_BASE, LABEL_OWNER, LABEL_RUN, ContainerRecord, ImageRecord
from builder.host.cache import Cache


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


class Engine:
    def __init__(self, containers: list[ContainerRecord], images: dict[str, ImageRecord]) -> None:
        self._containers = containers
        self._images = images
        self.removed: list[str] = []
        self.removed_images: list[str] = []
        self._image_list: list[ImageRecord] = []

    def containers(self, label: str | None = None) -> list[ContainerRecord]:
        return [c for c in self._containers if label is None or label in c.labels]

    def inspect_image(self, reference: str) -> ImageRecord | None:
        return self._images.get(reference)

    def remove_container(self, container_id: str) -> None:
        self.removed.append(container_id)

    def images(self, label: str) -> list[ImageRecord]:
        return list(self._image_list)

    def remove_image(self, image_id: str) -> None:
        self.removed_images.append(image_id)


def record(name: str, run: str, owner: str, image: str = "plain") -> ContainerRecord:
    labels = {LABEL_RUN: run, LABEL_OWNER: owner}
    return ContainerRecord(id=name, name=name, labels=labels, image=image)


def test_only_provably_dead_runs_of_this_host_are_removed(tmp_path: Path) -> None:
    here = socket.gethostname()
    gone = f"{here}:{dead_pid()}"
    containers = [
        record("qga-builder-abc123def456-0a1b2c", "abc123def456", gone),  # ours, dead: goes
        record("qga-builder-abc123def456-0a1b2d", "abc123def456", f"{here}:1"),  # pid 1 lives
        record("users-own-container", "abc123def456", gone),  # not our naming
        record("qga-builder-fff123def456-0a1b2c", "fff123def456", gone, image="inherits"),
        record("qga-builder-eee123def456-0a1b2c", "eee123def456", "other-host:4242"),
    ]
    images = {
        "plain": ImageRecord(id="plain"),
        "inherits": ImageRecord(id="inherits", labels={LABEL_OWNER: gone}),
    }
    engine = Engine(containers, images)
    dry = clean(engine, Cache(tmp_path), output_root=tmp_path, keep=2, dry_run=True)  # type: ignore[arg-type]
    assert dry["containers"] == ["qga-builder-abc123def456-0a1b2c"] and engine.removed == []
    done = clean(engine, Cache(tmp_path), output_root=tmp_path, keep=2, dry_run=False)  # type: ignore[arg-type]
    assert done["containers"] == dry["containers"]
    assert engine.removed == ["qga-builder-abc123def456-0a1b2c"]


def test_old_images_go_per_dockerfile_and_base(tmp_path: Path) -> None:
    """Each series' build image (its own base) is kept on its own; --repository narrows."""

    def image(name: str, tag: str, base: str, created: int) -> ImageRecord:
        return ImageRecord(id=name, tags=(tag,), labels={LABEL_BASE: base}, created=created)

    engine = Engine([], {})
    engine._image_list = [
        image("trixie-new", "qga-builder/dockerfile.linux:a", "trixie", 30),
        image("trixie-old", "qga-builder/dockerfile.linux:b", "trixie", 10),
        image("bookworm", "qga-builder/dockerfile.linux:c", "bookworm", 20),
        image("bullseye", "qga-builder/dockerfile.linux:d", "bullseye", 25),
        image("mingw-old", "qga-builder/dockerfile.mingw:e", "trixie", 5),
        image("mingw-new", "qga-builder/dockerfile.mingw:f", "trixie", 50),
    ]
    clean(engine, Cache(tmp_path), output_root=tmp_path, keep=1, dry_run=False)  # type: ignore[arg-type]
    assert sorted(engine.removed_images) == ["mingw-old", "trixie-old"]
    engine.removed_images.clear()
    clean(
        engine,  # type: ignore[arg-type]
        Cache(tmp_path),
        output_root=tmp_path,
        keep=1,
        dry_run=False,
        repository="qga-builder/dockerfile.mingw",
    )
    assert engine.removed_images == ["mingw-old"]
