"""Stage: make sure the base image exists.

A registry base (pinned by digest) is used when present and pulled otherwise. A debootstrap base
is made on this host: `debootstrap` into a temporary directory, then `docker import`. That is how
the tool works without any registry (air-gapped hosts, and this project's CI).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.config.plan import BasePlan
from builder.engine import LABEL_KIND
from builder.errors import HostToolError, ImageError
from builder.host import debian
from builder.host.cache import Cache
from builder.host.locks import exclusive
from builder.log import LineSink, StepOutput
from builder.stages.context import ContainerEngine, RunContext


@dataclass(frozen=True)
class BaseImage:
    reference: str
    image_id: str
    record: dict[str, object] = field(default_factory=dict)


def ensure(ctx: RunContext, output: StepOutput) -> None:
    """Stage `base-image`."""
    ctx.base = ensure_base(ctx.engine, ctx.plan.image.base, ctx.cache, output.line)


def ensure_base(engine: ContainerEngine, base: BasePlan, cache: Cache, log: LineSink) -> BaseImage:
    key = "base-" + re.sub(r"[^A-Za-z0-9_.-]", "_", base.reference)[:100]
    with exclusive(cache.lock_path(key), f"base image {base.reference}", log):
        return _present_or_made(engine, base, log)


def _present_or_made(engine: ContainerEngine, base: BasePlan, log: LineSink) -> BaseImage:
    image_id = engine.image_id(base.reference)
    record: dict[str, object] = {"kind": base.kind, "reference": base.reference}
    if base.kind == "debootstrap":
        record |= {
            "suite": base.suite,
            "variant": base.variant,
            "mirror": base.mirror or "host apt",
        }
    if image_id is not None:
        log(f"base {base.reference} is present ({image_id[:19]})")
        return BaseImage(base.reference, image_id, record=record | _labels(engine, base))
    if base.kind == "registry":
        log(f"base {base.reference} is missing: pulling it")
        image_id = engine.pull(base.reference)
        return BaseImage(base.reference, image_id, record=record)
    assert base.suite and base.variant
    image_id = make_debootstrap_base(
        engine,
        suite=base.suite,
        variant=base.variant,
        mirror=base.mirror,
        reference=base.reference,
        log=log,
    )
    return BaseImage(base.reference, image_id, record=record | _labels(engine, base))


def _labels(engine: ContainerEngine, base: BasePlan) -> dict[str, object]:
    record = engine.inspect_image(base.reference)
    if base.kind != "debootstrap":
        return {"repo_digests": list(record.repo_digests) if record else []}
    return {"created": record.labels.get("org.qga-builder.base.created") if record else None}


def make_debootstrap_base(
    engine: ContainerEngine,
    *,
    suite: str,
    variant: str,
    mirror: str | None,
    reference: str,
    log: LineSink,
) -> str:
    """debootstrap SUITE into a temporary directory and `docker import` it as REFERENCE."""
    what = f"base image {reference} is missing and cannot be made"
    if shutil.which("debootstrap") is None:
        raise HostToolError(
            f"{what}: debootstrap is not installed", hint="apt-get install debootstrap"
        )
    if os.geteuid() != 0:
        raise ImageError(f"{what}: debootstrap needs root", hint="run `make setup` as root once")
    mirror = mirror or debian.host_mirror()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="qga-builder-rootfs-") as rootfs:
        log(f"debootstrap --variant={variant} {suite} (into {rootfs})")
        command = ["debootstrap", f"--variant={variant}", suite, rootfs, mirror]
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert process.stdout is not None
        with _reaped(process):
            for line in process.stdout:
                log(line.rstrip())
        if process.wait() != 0:
            raise ImageError(
                f"{what}: debootstrap {suite} failed (exit {process.returncode})",
                hint="see the log above; check the mirror and the suite name",
            )
        # Containers need no apt caches from the bootstrap; keep the image small.
        shutil.rmtree(Path(rootfs) / "var/cache/apt/archives", ignore_errors=True)
        log(f"docker import as {reference}")
        tar = subprocess.Popen(
            ["tar", "--numeric-owner", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE
        )
        assert tar.stdout is not None
        with _reaped(tar):
            labels = {
                LABEL_KIND: "base",
                "org.qga-builder.base.suite": suite,
                "org.qga-builder.base.variant": variant,
                "org.qga-builder.base.created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            image_id = engine.import_rootfs(tar.stdout, reference, labels)
    log(f"made {reference} ({image_id[:19]}) in {time.monotonic() - started:.0f} s")
    return image_id


@contextmanager
def _reaped(process: subprocess.Popen[Any]) -> Iterator[None]:
    """Kill the child if we are interrupted (or fail) while it runs; always wait for it."""
    try:
        yield
    except BaseException:
        process.kill()
        raise
    finally:
        if process.stdout:
            process.stdout.close()
        process.wait()
