"""The build container, exactly as the pipeline makes it: no network, unprivileged, no
capabilities, limits applied. The same probe with the network on succeeds, so it can fail."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

import pytest

from builder.boxes.build_box import build_container
from builder.commands.common import load_plan
from builder.config.layout import BUILD_UID
from builder.config.overrides import Overrides
from builder.engine import Engine
from builder.host import debian
from tests.helpers import DEFAULT_RECIPE, write_variant


def _probe(host: str, port: int) -> list[str]:
    code = (
        "import socket,sys\n"
        f"try:\n socket.create_connection(({host!r}, {port}), timeout=5)\n"
        "except OSError as e:\n print('blocked:', e); sys.exit(1)\nprint('connected')\n"
    )
    return ["python3", "-c", code]


@pytest.fixture(scope="module")
def build_image_id(patched_build: Path) -> str:
    return json.loads((patched_build / "manifest.json").read_text())["environment"]["image"]["id"]


@pytest.fixture(scope="module")
def mirror() -> tuple[str, int]:
    url = urlparse(debian.host_mirror())  # read from this host's apt sources, not written here
    return url.hostname or "", url.port or 80


def test_build_steps_cannot_reach_the_network(
    engine: Engine, build_image_id: str, mirror: tuple[str, int]
) -> None:
    plan, _ = load_plan(DEFAULT_RECIPE, Overrides())
    lines: list[str] = []
    with build_container(engine, plan, build_image_id) as box:
        assert box.run(_probe(*mirror), on_line=lines.append) == 1, lines
        assert any("blocked" in line for line in lines)
        lines.clear()
        assert box.run(_probe("1.1.1.1", 53), on_line=lines.append) == 1, lines


def test_the_probe_can_succeed_with_a_network(
    engine: Engine, build_image_id: str, mirror: tuple[str, int]
) -> None:
    lines: list[str] = []
    with engine.container(build_image_id, labels={}, user="builder", network=True) as box:
        assert box.run(_probe(*mirror), on_line=lines.append) == 0, lines


def test_unprivileged_without_capabilities_and_limited(
    engine: Engine, build_image_id: str, tmp_path: Path
) -> None:
    recipe = write_variant(tmp_path, "limited", build={"memory": "3g", "cpus": 1.5})
    plan, _ = load_plan(recipe, Overrides())
    with build_container(engine, plan, build_image_id) as box:
        made = engine.container_settings(box.id)
        assert made.network_mode == "none"
        assert made.cap_drop == ("ALL",) and not made.cap_add
        assert made.privileged is False
        assert "no-new-privileges" in made.security_opt
        assert made.memory == 3 * 1024**3
        assert made.nano_cpus == 1_500_000_000
        lines: list[str] = []
        assert (
            box.run(["sh", "-c", "id -u; grep CapEff /proc/self/status"], on_line=lines.append) == 0
        )
        assert lines[0] == str(BUILD_UID)
        assert lines[1].split()[1] == "0000000000000000"
        assert box.run(["sh", "-c", "touch /etc/x"], on_line=lines.append) != 0


def test_the_build_trees_are_a_tmpfs_of_the_build_user(
    engine: Engine, build_image_id: str, tmp_path: Path
) -> None:
    recipe = write_variant(tmp_path, "scratch", build={"memory": "3g"})
    plan, _ = load_plan(recipe, Overrides())
    with build_container(engine, plan, build_image_id, scratch="/work/qemu") as box:
        lines: list[str] = []
        script = "stat -c '%u %a' /work/qemu; grep ' /work/qemu ' /proc/mounts"
        assert box.run(["sh", "-c", script], on_line=lines.append) == 0, lines
        assert lines[0] == f"{BUILD_UID} 755"
        kind, options = lines[1].split()[2], lines[1].split()[3].split(",")
        assert kind == "tmpfs" and {"nosuid", "nodev"} <= set(options), lines
        assert "noexec" not in options  # configure and the build's tools run from it
        assert f"size={3 * 1024**2}k" in options
        # a sibling of the tree stays the build user's (the exchange directory goes there)
        assert box.run(["mkdir", "/work/qemu.io"], on_line=lines.append) == 0, lines
