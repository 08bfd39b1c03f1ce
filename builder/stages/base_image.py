"""Stage: make sure the base image exists.

A registry base (pinned by digest) is used when present and pulled otherwise. A debootstrap base
is made on this host: `debootstrap` into a temporary directory, then `docker import`. That is how
the tool works without any registry (air-gapped hosts, and this project's CI).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.caches.image_transfer import copy_from_peers
from builder.config.plan import BasePlan
from builder.engine import LABEL_KIND, LABEL_RECIPE
from builder.errors import HostToolError, ImageError
from builder.formats.checksums import sha256_file, sha256_json
from builder.host import debian
from builder.host.cache import Cache
from builder.host.locks import exclusive
from builder.log import LineSink, StepOutput
from builder.run_context import ContainerEngine, RunContext

LABEL_BASE_INPUTS = "org.qga-builder.base.inputs"
LABEL_OS_RELEASE = "org.qga-builder.base.os-release"
SEED_FAMILY = "qga-builder/base:trixie-minbase"


@dataclass(frozen=True)
class BaseImage:
    reference: str
    image_id: str
    record: dict[str, object] = field(default_factory=dict)


def ensure(ctx: RunContext, output: StepOutput) -> None:
    """Stage `base-image`."""
    ctx.base = ensure_base(
        ctx.engine, ctx.image_plan.base, ctx.cache, output.line, peers=ctx.peer_engines
    )


def ensure_base(
    engine: ContainerEngine,
    base: BasePlan,
    cache: Cache,
    log: LineSink,
    *,
    peers: Sequence[ContainerEngine] = (),
) -> BaseImage:
    """The base on `engine`: present, copied from one of `peers`, pulled or made."""
    key = "base-" + re.sub(r"[^A-Za-z0-9_.-]", "_", base.reference)[:100]
    with exclusive(cache.lock_path(key), f"base image {base.reference}", log):
        if base.kind == "registry":
            return _registry_base(engine, base, log, peers)
        return _debootstrap_base(engine, base, log, peers)


def _registry_base(
    engine: ContainerEngine, base: BasePlan, log: LineSink, peers: Sequence[ContainerEngine]
) -> BaseImage:
    record: dict[str, object] = {"kind": base.kind, "reference": base.reference}
    found = engine.inspect_image(base.reference) or copy_from_peers(
        engine, peers, base.reference, label=None, value=None, log=log
    )
    if found is None:
        log(f"base {base.reference} is missing: pulling it")
        engine.pull(base.reference)
        found = engine.inspect_image(base.reference)
        assert found is not None
    else:
        log(f"base {base.reference} is present ({found.id[:19]})")
    return BaseImage(
        base.reference, found.id, record=record | {"repo_digests": list(found.repo_digests)}
    )


def debootstrap_inputs(suite: str, variant: str, mirror: str) -> dict[str, str]:
    """Everything a debootstrapped base depends on; its tag and label carry their digest."""
    return {
        "suite": suite,
        "variant": variant,
        "mirror": mirror,
        "keyring_sha256": sha256_file(debian.KEYRING) if debian.KEYRING.is_file() else "",
    }


def debootstrap_tag(reference: str, inputs: dict[str, str]) -> str:
    return f"{reference}-{sha256_json(inputs)[:12]}"


def _debootstrap_base(
    engine: ContainerEngine, base: BasePlan, log: LineSink, peers: Sequence[ContainerEngine]
) -> BaseImage:
    assert base.suite and base.variant
    mirror = base.mirror or debian.host_mirror()
    inputs = debootstrap_inputs(base.suite, base.variant, mirror)
    tag = debootstrap_tag(base.reference, inputs)
    found = engine.inspect_image(tag)
    if found is None or found.labels.get(LABEL_BASE_INPUTS) != sha256_json(inputs):
        found = (
            copy_from_peers(
                engine, peers, tag, label=LABEL_BASE_INPUTS, value=sha256_json(inputs), log=log
            )
            or found
        )
    if found is not None and found.labels.get(LABEL_BASE_INPUTS) == sha256_json(inputs):
        log(f"base {tag} is present ({found.id[:19]}): suite, variant, mirror, keyring unchanged")
    else:
        if found is not None:
            log(f"base {tag} exists but its recorded inputs differ: making it again")
        make_debootstrap_base(
            engine,
            suite=base.suite,
            variant=base.variant,
            mirror=mirror,
            reference=tag,
            log=log,
            family=base.reference,
        )
        found = engine.inspect_image(tag)
        assert found is not None
    record: dict[str, object] = {
        "kind": base.kind,
        "reference": base.reference,
        "tag": tag,
        **inputs,
        "distribution": found.labels.get(LABEL_OS_RELEASE, "unknown"),
        "created": found.labels.get("org.qga-builder.base.created"),
    }
    return BaseImage(base.reference, found.id, record=record)


def make_debootstrap_base(
    engine: ContainerEngine,
    *,
    suite: str,
    variant: str,
    mirror: str | None,
    reference: str,
    log: LineSink,
    family: str | None = None,
) -> str:
    """debootstrap SUITE into a temporary directory and `docker import` it as REFERENCE.

    debootstrap checks the archive's signature with Debian's keyring and stops when it cannot
    (`--force-check-gpg`): an unsigned or wrongly signed archive makes no base.
    """
    what = f"base image {family or reference} is missing and cannot be made"
    if not debian.KEYRING.is_file():
        raise HostToolError(
            f"{what}: {debian.KEYRING} is missing, so the archive cannot be verified",
            hint="apt-get install debian-archive-keyring",
        )
    mirror = mirror or debian.host_mirror()
    inputs = debootstrap_inputs(suite, variant, mirror)
    labels = {
        LABEL_KIND: "base",
        "org.qga-builder.base.suite": suite,
        "org.qga-builder.base.variant": variant,
        "org.qga-builder.base.created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        LABEL_BASE_INPUTS: sha256_json(inputs),
    }
    started = time.monotonic()
    if os.geteuid() == 0 and shutil.which("debootstrap") is not None:
        image_id = _on_this_host(engine, suite, variant, mirror, reference, labels, log, what)
    else:
        # debootstrap needs root; a docker-group user has root only inside a container.
        seed = _seed(engine, mirror)
        if seed is None:
            raise ImageError(
                f"{what}: debootstrap needs root here, and there is no base image "
                f"{_seed_tag(mirror)} to run it in",
                hint="run `sudo scripts/setup.sh` once: it makes that base image as root",
            )
        image_id = _in_container(engine, seed, suite, variant, mirror, reference, labels, log, what)
    log(f"made {reference} ({image_id[:19]}) in {time.monotonic() - started:.0f} s")
    return image_id


def debootstrap_argv(
    suite: str, variant: str, mirror: str, *, keyring: str, into: str
) -> list[str]:
    """One debootstrap line for the host and the container alike: the archive's signature
    checked with Debian's keyring, or no base (`--force-check-gpg`)."""
    return [
        "debootstrap",
        f"--variant={variant}",
        f"--keyring={keyring}",
        "--force-check-gpg",
        suite,  # a validated name, and the mirror an http(s) URL: neither is an option
        into,
        mirror,
    ]


def _on_this_host(
    engine: ContainerEngine,
    suite: str,
    variant: str,
    mirror: str,
    reference: str,
    labels: dict[str, str],
    log: LineSink,
    what: str,
) -> str:
    with tempfile.TemporaryDirectory(prefix="qga-builder-rootfs-") as rootfs:
        log(f"debootstrap --variant={variant} {suite} (into {rootfs})")
        command = debootstrap_argv(suite, variant, mirror, keyring=str(debian.KEYRING), into=rootfs)
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
        distribution = os_release(Path(rootfs))
        # Containers need no apt caches from the bootstrap; keep the image small.
        shutil.rmtree(Path(rootfs) / "var/cache/apt/archives", ignore_errors=True)
        log(f"docker import as {reference}")
        tar = subprocess.Popen(
            ["tar", "--numeric-owner", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE
        )
        assert tar.stdout is not None
        with _reaped(tar):
            return engine.import_rootfs(
                tar.stdout, reference, labels | {LABEL_OS_RELEASE: distribution}
            )


# What debootstrap needs inside its container: to own, chroot, make device nodes; no more.
DEBOOTSTRAP_CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "MKNOD", "SETUID", "SETGID", "SYS_CHROOT",
    "SETFCAP",
)  # fmt: skip
_IN_BOX_KEYRING = "/tmp/qga-builder-keyring.gpg"
_IN_BOX_ROOTFS = "/rootfs"
_IN_BOX_TAR = "/rootfs.tar"


def _seed_tag(mirror: str) -> str:
    return debootstrap_tag(SEED_FAMILY, debootstrap_inputs("trixie", "minbase", mirror))


def _seed(engine: ContainerEngine, mirror: str) -> str | None:
    """The default base (made by the set-up as root), in which debootstrap runs for others."""
    found = engine.inspect_image(_seed_tag(mirror))
    return found.id if found is not None else None


def _in_container(
    engine: ContainerEngine,
    seed: str,
    suite: str,
    variant: str,
    mirror: str,
    reference: str,
    labels: dict[str, str],
    log: LineSink,
    what: str,
) -> str:
    """debootstrap in a container of the seed base, with the host's keyring, as its root."""
    log(f"debootstrap --variant={variant} {suite} in a container of {seed[:19]} (it needs root)")
    with engine.container(
        seed,
        labels={LABEL_RECIPE: "base-image"},
        user="root",
        network=True,  # apt and debootstrap fetch from the mirror
        cap_add=DEBOOTSTRAP_CAPABILITIES,
    ) as box:
        box.put_files(
            "/tmp", {Path(_IN_BOX_KEYRING).name: debian.KEYRING.read_bytes()}, uid=0, gid=0
        )
        steps = [
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", "debootstrap"],
            debootstrap_argv(suite, variant, mirror, keyring=_IN_BOX_KEYRING, into=_IN_BOX_ROOTFS),
            ["rm", "-rf", f"{_IN_BOX_ROOTFS}/var/cache/apt/archives"],
            ["tar", "--numeric-owner", "-C", _IN_BOX_ROOTFS, "-cf", _IN_BOX_TAR, "."],
        ]
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        for command in steps:
            code = box.run(command, on_line=log, env=env)
            if code != 0:
                raise ImageError(
                    f"{what}: `{' '.join(command[:2])}` failed in its container (exit {code})",
                    hint="see the log above; check the mirror and the suite name",
                )
        with tempfile.TemporaryDirectory(prefix="qga-builder-rootfs-") as tmp:
            tar_path = Path(tmp) / "rootfs.tar"
            _unwrap_single_file(box.get_archive(_IN_BOX_TAR), tar_path)
            distribution = _tar_os_release(tar_path)
            log(f"docker import as {reference}")
            with tar_path.open("rb") as tar:
                return engine.import_rootfs(
                    tar, reference, labels | {LABEL_OS_RELEASE: distribution}
                )


def _unwrap_single_file(archive: Iterable[bytes], dest: Path) -> None:
    """The one regular file of the engine's archive stream, written to `dest`."""
    reader = _ChunkReader(iter(archive))
    with tarfile.open(fileobj=reader, mode="r|") as outer:
        for member in outer:
            if member.isfile():
                source = outer.extractfile(member)
                assert source is not None
                with dest.open("wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
                return
    raise ImageError("the engine's archive held no file")


def _tar_os_release(tar_path: Path) -> str:
    """PRETTY_NAME of the tree in the tarball (see os_release)."""
    with tempfile.TemporaryDirectory(prefix="qga-builder-os-release-") as tmp:
        with tarfile.open(tar_path) as tree:
            for name in ("./etc/os-release", "./usr/lib/os-release"):
                try:
                    member = tree.getmember(name)
                except KeyError:
                    continue
                if member.isfile() and member.size < 65536:
                    data = tree.extractfile(member)
                    assert data is not None
                    target = Path(tmp) / name.lstrip("./")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data.read())
        return os_release(Path(tmp))


class _ChunkReader(io.RawIOBase):
    """A file object over an iterator of byte chunks (the engine's archive stream)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def os_release(root: Path) -> str:
    """PRETTY_NAME from the tree's os-release (what the base really is), or "unknown"."""
    for candidate in ("etc/os-release", "usr/lib/os-release"):
        path = root / candidate
        if path.is_file() and not path.is_symlink():
            for line in path.read_text(errors="replace").splitlines():
                key, _, value = line.partition("=")
                if key == "PRETTY_NAME":
                    return value.strip().strip('"')[:128]
    return "unknown"


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
