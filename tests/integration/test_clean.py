"""`clean` keeps the newest N build images per Dockerfile and removes the older ones, and the
cache volumes of the images it removed."""

from __future__ import annotations

import json
import time
from pathlib import Path

from builder.boxes.build_box import BUILD_CACHE, ccache_volume
from builder.engine import LABEL_IMAGE, LABEL_KIND, Engine
from tests.helpers import run_cli


def test_old_images_are_pruned(engine: Engine, patched_build: Path, tmp_path: Path) -> None:
    base = json.loads((patched_build / "manifest.json").read_text())["environment"]["base"]
    dockerfile = f"FROM {base['image_id']}\nLABEL org.qga-builder.test=clean\n".encode()
    tags = [f"qga-builder/test-clean:{index}" for index in range(4)]
    ids: list[str] = []
    try:
        for index, tag in enumerate(tags):
            engine.build_image(
                dockerfile,
                tag,
                build_args={"N": str(index)},
                labels={LABEL_KIND: "build", "n": str(index)},
                on_line=lambda _: None,
            )
            time.sleep(1.1)  # distinct creation times: "newest" is well defined
        ids = [engine.image_id(tag) or "" for tag in tags]
        for image_id in (ids[0], ids[-1]):  # as a build makes them: labelled with their image
            labels = {LABEL_KIND: BUILD_CACHE, LABEL_IMAGE: image_id}
            engine.ensure_volume(ccache_volume(image_id), labels)
        result = run_cli(
            "clean",
            "--keep",
            "2",
            "--repository",
            "qga-builder/test-clean",  # the session's real images stay
            "--output-root",
            str(tmp_path),
            "--log-format",
            "json",
        )
        assert result.returncode == 0, result.stderr
        remaining = [tag for tag in tags if engine.image_id(tag)]
        assert remaining == tags[-2:]  # the two newest
        volumes = {v.name for v in engine.volumes(f"{LABEL_KIND}={BUILD_CACHE}")}
        assert ccache_volume(ids[0]) not in volumes  # its image is gone
        assert ccache_volume(ids[-1]) in volumes
    finally:
        for tag in tags:
            if engine.image_id(tag):
                engine.remove_image(tag)
        for image_id in ids:
            engine.remove_volume(ccache_volume(image_id))
