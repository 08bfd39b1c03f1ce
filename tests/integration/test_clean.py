"""`clean` keeps the newest N build images per Dockerfile and removes the older ones."""

from __future__ import annotations

import json
import time
from pathlib import Path

from builder.engine import LABEL_KIND, Engine
from tests.helpers import run_cli


def test_old_images_are_pruned(engine: Engine, patched_build: Path, tmp_path: Path) -> None:
    base = json.loads((patched_build / "manifest.json").read_text())["environment"]["base"]
    dockerfile = f"FROM {base['image_id']}\nLABEL org.qga-builder.test=clean\n".encode()
    tags = [f"qga-builder/test-clean:{index}" for index in range(4)]
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
    finally:
        for tag in tags:
            if engine.image_id(tag):
                engine.remove_image(tag)
