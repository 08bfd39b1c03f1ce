"""Stage `series`: which QEMU version the source is, and, for a recipe that leaves its patches
out, our patch set for that series and what else the series needs (the Debian suite of its era,
packages, configure flags), as `patches/qemu-X.Y/series.yaml` says; every patch pinned there by
sha256. Also `patches check`: whether each patch of a set applies (tried on a scratch copy of
the files it touches, on the host: patch only reads and writes text, nothing of the source runs).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError

from builder.config import patterns
from builder.config.plan import (
    SERIES_PATCHES_FIRST,
    ImagePlan,
    PatchPlan,
    Plan,
    Resolution,
    debootstrap_base,
    image_plan,
    resolve_artifacts,
)
from builder.config.recipe import Model, Sha256, parse_yaml
from builder.errors import HostToolError, InputError, PatchError
from builder.formats.checksums import sha256_file, sha256_json
from builder.log import StepOutput
from builder.run_context import RunContext
from builder.stages.patches import TOUCHED, describe_failure

PATCHES_DIR = Path(__file__).resolve().parent.parent.parent / "patches"
_VERSION = re.compile(r"^(?P<major>\d{1,3})\.(?P<minor>\d{1,3})(\.\d{1,4})?(-rc\d+)?$")
MAX_VERSION_BYTES = 64


@dataclass(frozen=True)
class PatchTrial:
    patch: Path
    sha256: str
    applies: bool
    detail: str


def series_of(version: str) -> str:
    match = _VERSION.match(version.strip())
    if not match:
        raise InputError(f"source: VERSION says {version.strip()[:40]!r}, not a QEMU version")
    return f"{int(match['major'])}.{int(match['minor'])}"


def supported_series(patches_dir: Path = PATCHES_DIR) -> list[str]:
    found = [p.name.removeprefix("qemu-") for p in patches_dir.glob("qemu-*") if p.is_dir()]
    return sorted(found, key=lambda s: tuple(int(x) for x in s.split(".")))


class TargetSpec(Model):
    """What a build of one target (linux, windows) of a series takes."""

    patches: list[Annotated[str, Field(pattern=patterns.PATCH_FILE)]]
    suite: Annotated[str, Field(pattern=patterns.SUITE)]
    packages: list[Annotated[str, Field(pattern=patterns.PACKAGE)]]
    # Packages from the suite's backports (the image's build arg BACKPORTS).
    backports: list[Annotated[str, Field(pattern=patterns.PACKAGE)]] = Field(default_factory=list)
    configure: list[Annotated[str, Field(min_length=1, max_length=1024)]]


class SeriesSpec(Model):
    series: str
    tested: list[str]
    pins: dict[str, Sha256]
    targets: dict[Literal["linux", "windows"], TargetSpec]


def load_series(series: str, patches_dir: Path = PATCHES_DIR) -> SeriesSpec:
    path = patches_dir / f"qemu-{series}" / "series.yaml"
    if not path.is_file():
        raise PatchError(
            f"QEMU {series} has no patch set of ours (supported: "
            f"{', '.join(supported_series(patches_dir))})",
            hint=f"write and test one in {path.parent}/ (see README: Adding a QEMU series)",
        )
    try:
        spec = SeriesSpec.model_validate(parse_yaml(path.read_text(), str(path)))
    except ValidationError as exc:
        raise InputError(f"{path}: not a series file: {exc.errors()[0]['msg']}") from None
    for target in spec.targets.values():
        unpinned = [name for name in target.patches if name not in spec.pins]
        if unpinned:
            raise InputError(f"{path}: {', '.join(unpinned)} has no sha256 under pins")
    return spec


def patch_set(series: str, patches_dir: Path = PATCHES_DIR) -> list[Path]:
    """Every patch the series pins, in file-name order (for `patches check`)."""
    spec = load_series(series, patches_dir)
    return [patches_dir / f"qemu-{series}" / name for name in sorted(spec.pins)]


@dataclass(frozen=True)
class Choice:
    """What a run takes from the plan, or from the source's series."""

    image_plan: ImagePlan
    patch_plans: tuple[PatchPlan, ...]
    configure_flags: tuple[str, ...]
    record: dict[str, object]
    run_key: str
    summary: str


def choose(plan: Plan, version: str) -> Choice:
    """For a recipe without `patches`: the series' patch set, and whatever else of its
    environment the recipe leaves to it. For one with patches: the plan as it is."""
    if not version:
        raise InputError(
            "source: it has no top-level VERSION file, so its QEMU series is unknown",
            hint="give a QEMU source tree or tarball (its VERSION names the release)",
        )
    name = series_of(version)
    record: dict[str, object] = {"version": version, "series": name}
    if not plan.series_decides:
        record |= {"patch_set": "named by the recipe", "why": "the recipe lists its patches"}
        summary = f"QEMU {version} (series {name}); the recipe names its patches"
        key = recorded_key(plan, record)
        return Choice(plan.image, plan.patches, plan.configure_flags, record, key, summary)
    spec = load_series(name)
    target = spec.targets.get(plan.target)  # type: ignore[call-overload]
    if target is None:
        raise PatchError(
            f"QEMU {name} has no {plan.target} build of ours yet "
            f"(targets: {', '.join(spec.targets)})",
            hint=f"add a {plan.target} section to patches/qemu-{name}/series.yaml and test it",
        )
    directory = PATCHES_DIR / f"qemu-{name}"
    patches = tuple(PatchPlan(directory / n, spec.pins[n]) for n in target.patches)
    chosen = set(plan.series_decides)
    if SERIES_PATCHES_FIRST in chosen:  # the user's own patches go on top of ours
        patches = (*patches, *plan.patches)
    image = plan.image
    base = debootstrap_base(target.suite) if "base" in chosen else image.base
    arch = plan.arch
    packages = (
        arch.build_packages(target.packages)
        if "packages" in chosen
        else _packages(image.build_args)
    )
    extra = {key: value for key, value in image.build_args if key != "PACKAGES"}
    if "packages" in chosen and target.backports:  # the series' and the recipe's own
        own = [p for p in extra.get("BACKPORTS", "").split() if p not in target.backports]
        extra["BACKPORTS"] = " ".join([*target.backports, *own])
    flags = plan.configure_flags
    if "configure" in chosen:
        flags = arch.configure_flags(
            (*target.configure, *(f for f in flags if f.startswith("--qemu-ga-")))
        )
    record |= {
        "patch_set": f"patches/qemu-{name}/",
        "patches": {n: spec.pins[n] for n in target.patches},
        **(
            {"own_patches": {p.path.name: p.sha256 for p in plan.patches}}
            if SERIES_PATCHES_FIRST in chosen
            else {}
        ),
        "tested": spec.tested,
        "chose": sorted(chosen),
        "suite": target.suite if "base" in chosen else None,
        "why": (
            f"the recipe leaves {', '.join(sorted(chosen - {SERIES_PATCHES_FIRST}))} to the "
            "source's series"
            + (
                ", and lists patches of its own to apply after the series' set"
                if SERIES_PATCHES_FIRST in chosen
                else ""
            )
        ),
    }
    return Choice(
        image_plan(image.dockerfile, image.dockerfile_sha256, base, packages, extra),
        patches,
        flags,
        record,
        recorded_key(plan, record),
        f"QEMU {version}: series {name}, patches/qemu-{name}/ ({', '.join(target.patches)})"
        + (
            f", then the recipe's ({', '.join(p.path.name for p in plan.patches)})"
            if SERIES_PATCHES_FIRST in chosen
            else ""
        )
        + f"; {record['why']}",
    )


def recorded_key(plan: Plan, record: dict[str, object]) -> str:
    """The cache key a run records (manifest `cache_key`; the MSI's codes come from it) and
    `plan` prints: the plan's key, and the series' choices when the recipe leaves them to it."""
    if not plan.series_decides:
        return plan.inputs_key
    return sha256_json({"plan": plan.inputs_key, "series": record})


def resolve_plan(plan: Plan, version: str) -> Plan:
    """The one resolution step: recipe + overrides (the plan) + the source's QEMU version -> the
    plan the run builds, frozen: the series' patch set, base, packages and configure flags
    where the recipe leaves them to it, `{version}` in artifact names, the cache key the run
    records. `run` (stage `series`), `plan` and `lock` all take it from here."""
    if plan.resolution is not None:
        return plan
    choice = choose(plan, version)
    return replace(
        plan,
        image=choice.image_plan,
        patches=choice.patch_plans,
        configure_flags=choice.configure_flags,
        artifacts=resolve_artifacts(plan, version),
        resolution=Resolution(version, choice.record, choice.run_key, choice.summary),
    )


def resolve(ctx: RunContext, output: StepOutput) -> None:
    """Stage `series`: the source's VERSION read, the plan resolved (`resolve_plan`)."""
    unresolved = ctx.plan
    ctx.plan = resolve_plan(unresolved, ctx.source.version)
    assert ctx.plan.resolution is not None
    output.line(ctx.plan.resolution.summary)
    for template, artifact in zip(unresolved.artifacts, ctx.plan.artifacts, strict=True):
        if template.name != artifact.name:
            output.line(f"artifact {template.name} is published as {artifact.name}")


def _packages(build_args: tuple[tuple[str, str], ...]) -> list[str]:
    return dict(build_args).get("PACKAGES", "").split()


def read_version(source: Path) -> str:
    """VERSION of a source tree, or of a tarball whose members sit under one top directory."""
    if source.is_dir():
        path = source / "VERSION"
        if not path.is_file() or path.is_symlink():
            raise InputError(f"source: {source} has no VERSION file; is it a QEMU source tree?")
        return path.read_text(errors="replace")[:MAX_VERSION_BYTES].strip()
    try:
        with tarfile.open(source, mode="r:*") as tar:
            for member in tar:
                parts = member.name.removeprefix("./").split("/")
                if parts[-1] == "VERSION" and len(parts) <= 2 and member.isfile():
                    data = tar.extractfile(member).read(MAX_VERSION_BYTES)  # type: ignore[union-attr]
                    return data.decode(errors="replace").strip()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(f"source: {source} is not a readable tarball: {exc}") from None
    raise InputError(f"source: {source} has no top-level VERSION; is it a QEMU source?")


def touched_files(patch: Path) -> list[str]:
    paths = []
    for line in patch.read_text(errors="replace").splitlines():
        match = TOUCHED.match(line)
        if match and match["path"] != "/dev/null":
            path = match["path"]
            if path.startswith("/") or ".." in path.split("/"):
                raise InputError(f"{patch.name}: it names {path!r}, outside the source")
            paths.append(path)
    return paths


def try_patches(source: Path, patches: list[Path]) -> list[PatchTrial]:
    """Apply the series in order to a scratch copy of the files it touches; say what happens."""
    if shutil.which("patch") is None:
        raise HostToolError(
            "`patches check` needs patch on this host", hint="apt-get install patch"
        )
    wanted = {path for patch in patches for path in touched_files(patch)}
    trials = []
    with tempfile.TemporaryDirectory(prefix="qga-patches-") as scratch:
        root = Path(scratch)
        _copy_files(source, wanted, root)
        for patch in patches:
            process = subprocess.run(
                [
                    "patch",
                    "-p1",
                    "--forward",
                    "--batch",
                    "--no-backup-if-mismatch",
                    "-i",
                    patch.resolve(),
                ],
                cwd=root,
                capture_output=True,
                text=True,
                check=False,
            )
            lines = (process.stdout + process.stderr).splitlines()
            applies = process.returncode == 0
            detail = "applies" if applies else describe_failure(lines)
            trials.append(PatchTrial(patch, sha256_file(patch), applies, detail))
    return trials


def _copy_files(source: Path, wanted: set[str], dest: Path) -> None:
    if source.is_dir():
        for name in wanted:
            path = source / name
            if path.is_file() and not path.is_symlink():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dest / name)
        return
    with tarfile.open(source, mode="r:*") as tar:
        for member in tar:
            name = member.name.removeprefix("./").split("/", 1)[-1]
            if name in wanted and member.isfile():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                (dest / name).write_bytes(tar.extractfile(member).read())  # type: ignore[union-attr]
