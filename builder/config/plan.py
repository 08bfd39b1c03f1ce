"""The plan: everything a run will do, resolved from the recipe as frozen data.

No Docker and no network here. Local files named by the recipe (the Dockerfile) are read to hash
them, so the image's content hash and the run's cache key cover every input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from builder import __version__
from builder.config.artifact_fields import (
    VERSION_PLACEHOLDER,
    artifact_name_problem,
    names_problem,
)
from builder.config.package_fields import PACKAGE_KINDS, Package
from builder.config.recipe import Recipe
from builder.errors import InputError, RecipeError
from builder.formats.architecture import (
    DEFAULT,
    FOREIGN_ARCHITECTURE_ARG,
    Architecture,
    architecture,
)
from builder.formats.checksums import sha256_bytes, sha256_json, verify_digest


@dataclass(frozen=True)
class BasePlan:
    kind: Literal["registry", "debootstrap", "series"]  # series: chosen after the source
    reference: str
    suite: str | None = None
    variant: str | None = None
    mirror: str | None = None


@dataclass(frozen=True)
class ImagePlan:
    dockerfile: Path
    dockerfile_sha256: str
    base: BasePlan
    build_args: tuple[tuple[str, str], ...]
    repository: str
    inputs_hash: str

    def tag(self, base_image_id: str) -> str:
        """The image tag: changes when any input, including the base's actual id, changes."""
        return f"{self.repository}:{self.final_hash(base_image_id)[:16]}"

    def final_hash(self, base_image_id: str) -> str:
        return sha256_json({"inputs": self.inputs_hash, "base_image_id": base_image_id})


@dataclass(frozen=True)
class SourcePlan:
    kind: Literal["git", "tarball", "local", "debian", "mirror"]
    sha256: str | None = None
    url: str | None = None
    path: Path | None = None
    tag: str | None = None
    commit: str | None = None
    package: str | None = None
    version: str | None = None
    suite: str | None = None
    mirror_path: str | None = None  # kind mirror: the file under the configured Debian mirror

    def describe(self) -> str:
        match self.kind:
            case "git":
                pin = self.commit[:12] if self.commit else "unpinned"
                return f"git {self.url} {self.tag} ({pin})"
            case "tarball":
                return f"tarball {self.path or self.url} sha256:{self.sha256}"
            case "local":
                return f"local tree {self.path}"
            case "debian":
                return f"Debian source {self.package}={self.version} ({self.suite})"
            case "mirror":
                return f"Debian mirror {self.mirror_path} sha256:{self.sha256}"


@dataclass(frozen=True)
class PatchPlan:
    path: Path
    sha256: str

    @property
    def name(self) -> str:
        return self.path.name


RELEASE_SUFFIX = "+qga1"  # the default release version is the QEMU version and this


@dataclass(frozen=True)
class ArtifactPlan:
    path: str
    name: str  # may hold `{version}` (the recipe's template); see resolve_artifacts
    kind: str
    strip: bool


@dataclass(frozen=True)
class PackagePlan:
    """The deb/rpm/tarball artifacts asked for and their fields (`package:` in the recipe)."""

    kinds: tuple[str, ...]
    name: str
    version: str | None  # None: the QEMU version + "+qga1", known after the source is unpacked
    revision: str
    maintainer: str


@dataclass(frozen=True)
class Resolution:
    """What the source's QEMU version settled (one step: `stages.series.resolve_plan`)."""

    qemu_version: str
    series: dict[str, Any]  # what the manifest records under `series`
    cache_key: str  # the key the run records
    summary: str  # one line for people


@dataclass(frozen=True)
class Plan:
    recipe_name: str
    recipe_path: Path
    recipe_sha256: str
    image: ImagePlan
    source: SourcePlan
    patches: tuple[PatchPlan, ...]
    configure_flags: tuple[str, ...]
    targets: tuple[str, ...]
    artifacts: tuple[ArtifactPlan, ...]
    service_kinds: tuple[str, ...]
    service_exec_path: str
    source_date_epoch: int | None
    jobs: int | None
    memory: str | None
    cpus: float | None
    output_dir: Path
    lock_path: Path
    target: str = "linux"
    vm_test: bool = False
    locked: bool = False
    overrides: dict[str, str] = field(default_factory=dict)
    max_artifact_bytes: int = 1 << 30
    # Left to the source's QEMU series (recipes without `patches`): e.g. patches, base, ...
    series_decides: tuple[str, ...] = ()
    package: PackagePlan | None = None
    architecture: str = DEFAULT.name  # formats/architecture.py names each one
    # Set once, by `stages.series.resolve_plan`, when the source's QEMU version is known:
    # then image, patches, configure_flags and artifacts are the ones the run builds with.
    resolution: Resolution | None = None

    def release_version(self, qemu_version: str) -> str:
        """The version of the packages and of `{version}` in artifact names: package.version
        when the recipe sets it, else the QEMU version + "+qga1"."""
        fixed = self.package.version if self.package is not None else None
        return fixed or f"{qemu_version}{RELEASE_SUFFIX}"

    @property
    def arch(self) -> Architecture:
        return architecture(self.architecture)

    @property
    def strip_tool(self) -> str:
        return "x86_64-w64-mingw32-strip" if self.target == "windows" else self.arch.strip_tool

    @property
    def cache_key(self) -> str:
        """The key the run records (manifest `cache_key`; the MSI's codes come from it): the
        resolution's once resolved, else the recipe's own."""
        if self.resolution is not None:
            return self.resolution.cache_key
        return self.inputs_key

    @property
    def inputs_key(self) -> str:
        """Digest over every input that can change the artifacts (not where they are written),
        as the recipe and overrides say them (before the source's series fills anything in)."""
        summary = self.summary()
        # `overrides` only records what changed other fields (or where the output goes).
        for volatile in (
            "output_dir",
            "recipe_path",
            "cache_key",
            "lock_path",
            "locked",
            "overrides",
            "max_artifact_bytes",  # a bound on what is copied out, not an input
            "resolution",
        ):
            summary.pop(volatile, None)
        if not self.series_decides:  # keys of recipes that name their patches stay as they were
            summary.pop("series_decides", None)
        if self.package is None:  # nor do the keys of recipes without packages
            summary.pop("package", None)
        if self.architecture == DEFAULT.name:  # nor those of recipes for the default machine
            summary.pop("architecture", None)
        # Files pinned by sha256 count by content, not by where this checkout lives: the MSI's
        # PackageCode comes from this key, and must not change with the clone's directory.
        summary["image"]["dockerfile"] = self.image.dockerfile.name
        for patch in summary["patches"]:
            patch["path"] = Path(patch["path"]).name
        if self.source.path is not None and self.source.sha256:
            summary["source"]["path"] = self.source.path.name
        if self.source.mirror_path is None:  # keys of the other source kinds stay as they were
            summary["source"].pop("mirror_path", None)
        return sha256_json(summary)

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data["cache_key"] = self.resolution.cache_key if self.resolution is not None else None
        data["tool_version"] = __version__
        jsonable: dict[str, Any] = _jsonable(data)
        return jsonable


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _resolve(recipe_dir: Path, path: Path) -> Path:
    return path if path.is_absolute() else (recipe_dir / path).resolve()


PROJECT_MARKERS = (".git", "pyproject.toml")


def project_root(recipe_path: Path) -> Path:
    """The recipe's project: the nearest directory at or above the recipe's that holds .git or
    pyproject.toml; without one, the recipe's own directory."""
    recipe_dir = recipe_path.parent.resolve()
    for directory in (recipe_dir, *recipe_dir.parents):
        if any((directory / marker).exists() for marker in PROJECT_MARKERS):
            return directory
    return recipe_dir


def check_recipe_files(
    recipe: Recipe, recipe_path: Path, *, allow_outside_project: bool = False
) -> None:
    """The Dockerfile and every patch exist, and live inside the recipe's project (a recipe
    from elsewhere must not pull files from anywhere on this host unless the user says so)."""
    recipe_dir = recipe_path.parent.resolve()
    root = project_root(recipe_path)
    named = [("environment.dockerfile", recipe.environment.dockerfile)]
    named += [(f"patches[{i}].path", p.path) for i, p in enumerate(recipe.patches or ())]
    for field_name, path in named:
        resolved = _resolve(recipe_dir, path).resolve()
        if not resolved.is_file():
            raise RecipeError(
                f"{recipe_path}: {field_name}: {resolved} does not exist",
                hint="paths in a recipe are relative to the recipe file",
            )
        if not allow_outside_project and not resolved.is_relative_to(root):
            raise RecipeError(
                f"{recipe_path}: {field_name}: {resolved} is outside the recipe's project {root}",
                hint="move it into the project, or pass --allow-outside-project if you trust it",
            )


def check_pinned_files(plan: Plan) -> None:
    """Every local file the recipe pins by sha256 has that digest: what `run` checks before any
    container, said by `validate` and `plan` too, naming the recipe, the field and the file."""
    pinned = [(f"patches[{i}].sha256", p.path, p.sha256) for i, p in enumerate(plan.patches)]
    source = plan.source
    if source.kind == "tarball" and source.path is not None and source.sha256:
        pinned.append(("source.tarball.sha256", source.path, source.sha256))
    for field_name, path, expected in pinned:
        try:
            verify_digest(path, expected, f"{plan.recipe_path}: {field_name}")
        except OSError as exc:
            raise InputError(
                f"{plan.recipe_path}: {field_name.rsplit('.', 1)[0]}.path: cannot read {path}: "
                f"{exc.strerror}",
                hint="paths in a recipe are relative to the recipe file",
            ) from None


def debootstrap_base(suite: str, variant: str = "minbase", mirror: str | None = None) -> BasePlan:
    return BasePlan(
        kind="debootstrap",
        reference=f"qga-builder/base:{suite}-{variant}",
        suite=suite,
        variant=variant,
        mirror=mirror,
    )


SERIES_BASE = BasePlan(kind="series", reference="(the suite of the source's QEMU series)")


def resolve_base(recipe: Recipe) -> BasePlan:
    base = recipe.environment.base
    if base is None:
        return SERIES_BASE
    if base.image is not None:
        return BasePlan(kind="registry", reference=base.image)
    assert base.debootstrap is not None
    boot = base.debootstrap
    return debootstrap_base(boot.suite, boot.variant, boot.mirror)


def resolve_image(recipe: Recipe, recipe_dir: Path) -> ImagePlan:
    dockerfile = _resolve(recipe_dir, recipe.environment.dockerfile)
    args, arch = dict(recipe.environment.build_args), architecture(recipe.architecture)
    try:
        text = dockerfile.read_bytes()
    except OSError as exc:
        raise InputError(
            f"environment.dockerfile: cannot read {dockerfile}: {exc.strerror}",
            hint="paths in a recipe are relative to the recipe file",
        ) from None
    dockerfile_sha256 = sha256_bytes(text)
    if arch.cross:  # Dockerfile.linux-cross adds it (dpkg --add-architecture) for its -dev packages
        if f"ARG {FOREIGN_ARCHITECTURE_ARG}".encode() not in text:
            raise RecipeError(arch.dockerfile_problem(dockerfile.name), hint=arch.dockerfile_hint)
        args[FOREIGN_ARCHITECTURE_ARG] = arch.debian
    return image_plan(
        dockerfile,
        dockerfile_sha256,
        resolve_base(recipe),
        recipe.environment.packages or (),
        args,
    )


def image_plan(
    dockerfile: Path,
    dockerfile_sha256: str,
    base: BasePlan,
    packages: Sequence[str],
    extra_args: Mapping[str, str],
) -> ImagePlan:
    """The build image: the Dockerfile, its base and its build args, and a hash of them."""
    args = dict(extra_args)
    if packages:
        args["PACKAGES"] = " ".join(packages)
    build_args = tuple(sorted(args.items()))
    inputs = {"dockerfile": dockerfile_sha256, "base": asdict(base), "build_args": build_args}
    return ImagePlan(
        dockerfile=dockerfile,
        dockerfile_sha256=dockerfile_sha256,
        base=base,
        build_args=build_args,
        # Named after the Dockerfile, not the recipe: recipes with equal inputs share one image.
        repository=f"qga-builder/{_repository_name(dockerfile.name)}",
        inputs_hash=sha256_json(inputs),
    )


def _repository_name(dockerfile_name: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", dockerfile_name.lower()).strip(".-_") or "build"


def resolve_source(recipe: Recipe, recipe_dir: Path) -> SourcePlan:
    src = recipe.source
    if src.git is not None:
        return SourcePlan(kind="git", url=src.git.url, tag=src.git.tag, commit=src.git.commit)
    if src.tarball is not None:
        path = _resolve(recipe_dir, src.tarball.path) if src.tarball.path else None
        return SourcePlan(kind="tarball", url=src.tarball.url, path=path, sha256=src.tarball.sha256)
    if src.local is not None:
        return SourcePlan(kind="local", path=_resolve(recipe_dir, src.local.path))
    if src.mirror is not None:
        return SourcePlan(kind="mirror", mirror_path=src.mirror.path, sha256=src.mirror.sha256)
    assert src.debian is not None
    deb = src.debian
    return SourcePlan(
        kind="debian",
        package=deb.package,
        version=deb.version,
        suite=deb.suite,
        sha256=deb.sha256,
    )


def make_plan(
    recipe: Recipe,
    recipe_path: Path,
    recipe_bytes: bytes,
    *,
    output_dir: Path | None = None,
    overrides: dict[str, str] | None = None,
    locked: bool = False,
    allow_outside_project: bool = False,
) -> Plan:
    check_recipe_files(recipe, recipe_path, allow_outside_project=allow_outside_project)
    if locked and recipe.source.git is not None and recipe.source.git.commit is None:
        raise RecipeError(
            f"{recipe_path}: source.git: tag {recipe.source.git.tag} is not pinned by `commit:`; "
            "--locked builds only pinned sources",
            hint="add the tag's commit as source.git.commit",
        )
    recipe_dir = recipe_path.parent.resolve()
    build = recipe.build
    return Plan(
        recipe_name=recipe.name,
        recipe_path=recipe_path,
        recipe_sha256=sha256_bytes(recipe_bytes),
        image=resolve_image(recipe, recipe_dir),
        source=resolve_source(recipe, recipe_dir),
        patches=tuple(
            PatchPlan(path=_resolve(recipe_dir, p.path), sha256=p.sha256)
            for p in recipe.patches or ()
        ),
        configure_flags=architecture(recipe.architecture).configure_flags(
            (
                *(recipe.configure.flags or ()),
                *(recipe.msi.configure_flags() if recipe.msi else ()),
            )
        ),
        targets=tuple(build.targets),
        artifacts=tuple(
            ArtifactPlan(path=a.path or "", name=a.name or "", kind=a.kind, strip=a.strip)
            for a in recipe.artifacts
            if a.kind not in PACKAGE_KINDS
        ),
        service_kinds=tuple(recipe.services.kinds) if recipe.services else (),
        service_exec_path=recipe.services.exec_path if recipe.services else "",
        source_date_epoch=build.source_date_epoch,
        jobs=build.jobs,
        memory=build.memory,
        cpus=build.cpus,
        output_dir=output_dir or Path("out") / recipe.name,
        lock_path=recipe_path.with_suffix(".lock"),
        target=recipe.target,
        vm_test=recipe.vm_test,
        locked=locked,
        overrides=dict(overrides or {}),
        max_artifact_bytes=build.max_artifact_bytes,
        series_decides=series_decides(recipe),
        package=package_plan(recipe),
        architecture=recipe.architecture,
    )


def resolve_artifacts(plan: Plan, qemu_version: str) -> tuple[ArtifactPlan, ...]:
    """The plan's artifacts with `{version}` in their names replaced by the release version,
    each name checked again (a long version can make one too long, or two alike)."""
    if not any(VERSION_PLACEHOLDER in artifact.name for artifact in plan.artifacts):
        return plan.artifacts
    version = plan.release_version(qemu_version)
    resolved = []
    for artifact in plan.artifacts:
        name = artifact.name.replace(VERSION_PLACEHOLDER, version)
        problem = artifact_name_problem(name)
        if problem:
            raise RecipeError(
                f"{plan.recipe_path}: artifacts: name {artifact.name!r} with version {version}: "
                f"{problem}",
                hint="shorten the artifact's name in the recipe",
            )
        resolved.append(replace(artifact, name=name))
    problem = names_problem([artifact.name for artifact in resolved])
    if problem:
        raise RecipeError(f"{plan.recipe_path}: artifacts: with version {version}: {problem}")
    return tuple(resolved)


def package_plan(recipe: Recipe) -> PackagePlan | None:
    kinds = tuple(a.kind for a in recipe.artifacts if a.kind in PACKAGE_KINDS)
    if not kinds:
        return None
    fields = recipe.package or Package()
    return PackagePlan(kinds, fields.name, fields.version, fields.revision, fields.maintainer)


SERIES_PATCHES_FIRST = "series-patches-first"


def series_decides(recipe: Recipe) -> tuple[str, ...]:
    """What the source's QEMU series chooses: for a recipe that leaves its patches out, the
    patches and whatever of its environment it leaves out; for one that lists patches but no
    base (the default recipe plus a patch of the user's), the series' patches come first, then
    the recipe's, on the series' base. A recipe with patches and a base chooses for itself."""
    if recipe.patches is not None and recipe.environment.base is not None:
        return ()
    chosen = ["patches" if recipe.patches is None else SERIES_PATCHES_FIRST]
    if recipe.environment.base is None:
        chosen.append("base")
    if recipe.environment.packages is None:
        chosen.append("packages")
    if recipe.configure.flags is None:
        chosen.append("configure")
    return tuple(chosen)
