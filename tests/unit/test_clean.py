"""`clean` removes only containers it can prove a dead run of this host made (decided on the
engine's records; the integration tests remove real ones)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from builder.boxes.build_box import BUILD_CACHE, ccache_volume
from builder.commands.clean import clean
from builder.engine import (
    LABEL_BASE,
    LABEL_IMAGE,
    LABEL_KIND,
    LABEL_OWNER,
    LABEL_RUN,
    ContainerRecord,
    ImageRecord,
    VolumeRecord,
)
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
        self._volumes: list[VolumeRecord] = []
        self.removed_volumes: list[str] = []
        self.volumes_in_use: set[str] = set()

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

    def volumes(self, label: str) -> list[VolumeRecord]:
        key, _, value = label.partition("=")
        return [v for v in self._volumes if v.labels.get(key) == value]

    def remove_volume(self, name: str) -> str | None:
        if name in self.volumes_in_use:
            return "volume is in use"
        self.removed_volumes.append(name)
        return None


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


def test_cache_volumes_go_with_their_build_image(tmp_path: Path) -> None:
    """A build-cache volume is removed when its image is gone or pruned now; one in use, one
    of a live image, and one not named as the tool names them stay."""

    def volume(image_id: str, name: str | None = None) -> VolumeRecord:
        labels = {LABEL_KIND: BUILD_CACHE, LABEL_IMAGE: image_id}
        return VolumeRecord(name=name or ccache_volume(image_id), labels=labels)

    def image_id(letter: str) -> str:
        return "sha256:" + letter * 64

    live, pruned, vanished, busy = (image_id(x) for x in "abcd")
    engine = Engine([], {live: ImageRecord(id=live), pruned: ImageRecord(id=pruned)})
    engine._image_list = [
        ImageRecord(id=live, tags=("qga-builder/dockerfile.linux:new",), created=2),
        ImageRecord(id=pruned, tags=("qga-builder/dockerfile.linux:old",), created=1),
    ]
    engine._volumes = [
        volume(live),
        volume(pruned),
        volume(vanished),
        volume(busy),
        volume(vanished, name="users-volume"),
    ]
    engine.volumes_in_use.add(ccache_volume(busy))
    dry = clean(engine, Cache(tmp_path), output_root=tmp_path, keep=1, dry_run=True)  # type: ignore[arg-type]
    assert engine.removed_volumes == []
    assert sorted(dry["caches"]) == sorted(ccache_volume(x) for x in (pruned, vanished, busy))
    done = clean(engine, Cache(tmp_path), output_root=tmp_path, keep=1, dry_run=False)  # type: ignore[arg-type]
    assert sorted(done["caches"]) == sorted(ccache_volume(x) for x in (pruned, vanished))
    assert sorted(engine.removed_volumes) == sorted(done["caches"])


def test_guest_disks_go_with_their_guest_image(tmp_path: Path) -> None:
    """A cached guest disk goes when its image is gone or pruned now; one of a live image, one
    not named as vm-test names them, and one whose marker is not the tool's stay."""
    guests = Cache(tmp_path).dir("vm/guests")

    def image_id(letter: str) -> str:
        return "sha256:" + letter * 64

    def disk(name: str, marker: str | None) -> Path:
        entry = guests / name
        entry.mkdir()
        (entry / "disk.img").write_bytes(b"x")
        if marker is not None:
            (entry / ".complete").write_text(marker + "\n")
        return entry

    live, pruned, vanished = (image_id(x) for x in "abc")
    engine = Engine([], {live: ImageRecord(id=live), pruned: ImageRecord(id=pruned)})
    engine._image_list = [
        ImageRecord(id=live, tags=("qga-builder/guest-systemd:new",), created=2),
        ImageRecord(id=pruned, tags=("qga-builder/guest-systemd:old",), created=1),
    ]
    kept = [
        disk(f"systemd-{'a' * 24}", live),
        disk(f"systemd-{'d' * 24}", image_id("e")),  # marker names another image: not ours
        disk(f"mine-{'c' * 24}", vanished),  # not vm-test's naming
        disk(f"sysvinit-{'f' * 24}", None),  # incomplete (a disk being made)
    ]
    going = [
        disk(f"systemd-{'b' * 24}", pruned),
        disk(f"sysvinit-{'c' * 24}", vanished),
        disk(f"systemd-arm64-{'c' * 24}", vanished),  # the arm64 guest's (caches/arm64_guest.py)
    ]
    dry = clean(engine, Cache(tmp_path), output_root=tmp_path, keep=1, dry_run=True)  # type: ignore[arg-type]
    assert sorted(dry["guests"]) == sorted(str(p) for p in going)
    assert all(p.is_dir() for p in (*kept, *going))
    done = clean(engine, Cache(tmp_path), output_root=tmp_path, keep=1, dry_run=False)  # type: ignore[arg-type]
    assert sorted(done["guests"]) == sorted(str(p) for p in going)
    assert all(p.is_dir() for p in kept) and not any(p.exists() for p in going)


def test_a_guest_entry_that_is_a_link_stays(tmp_path: Path) -> None:
    guests = Cache(tmp_path).dir("vm/guests")
    elsewhere = tmp_path / "users-dir"
    elsewhere.mkdir()
    (elsewhere / ".complete").write_text("sha256:" + "a" * 64 + "\n")
    (guests / f"systemd-{'a' * 24}").symlink_to(elsewhere)
    engine = Engine([], {})
    done = clean(engine, Cache(tmp_path), output_root=tmp_path, keep=1, dry_run=False)  # type: ignore[arg-type]
    assert done["guests"] == [] and (elsewhere / ".complete").is_file()
