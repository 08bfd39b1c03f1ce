"""The recipe: a YAML file validated into frozen pydantic models.

Every field is documented here (the JSON Schema that `qga-builder schema` prints is made from these
docstrings and descriptions). Unknown keys are rejected, and every error names the file and the
field path. Relative paths in a recipe are relative to the recipe file's directory.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from builder.config import patterns
from builder.config.artifact_fields import (
    VERSION_PLACEHOLDER,
    Artifact,
    artifact_name_problem,
    names_problem,
)
from builder.config.package_fields import PACKAGE_KINDS, Package
from builder.config.recipe_errors import error_lines, join_lines
from builder.config.suggest import recipe_like
from builder.errors import RecipeError, UsageError
from builder.formats.architecture import architecture

MAX_RECIPE_BYTES = 256 * 1024
MAX_NESTING = 32
TOOL_BUILD_ARGS = frozenset({"BASE_IMAGE", "PACKAGES", "FOREIGN_ARCHITECTURE"})
# A registry image pinned by its digest, the whole digest (name:tag@sha256:<64 hex>).
PINNED_IMAGE = re.compile(r".@sha256:[0-9a-f]{64}$")
# Configure options the `msi:` fields own.
MSI_FLAGS = ("--qemu-ga-manufacturer", "--qemu-ga-distro", "--qemu-ga-version")

Sha256 = Annotated[str, Field(pattern=patterns.SHA256, description="lower-case hex sha256")]
ShortText = Annotated[str, Field(min_length=1, max_length=4096)]
Name = Annotated[str, Field(pattern=patterns.RECIPE_NAME)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _exactly_one(model: BaseModel, fields: tuple[str, ...]) -> None:
    given = [name for name in fields if getattr(model, name) is not None]
    if len(given) != 1:
        raise ValueError(f"set exactly one of: {', '.join(fields)} (got {len(given)})")


class Debootstrap(Model):
    """A base image made on this host with debootstrap and `docker import` (no registry needed)."""

    suite: Annotated[str, Field(pattern=patterns.SUITE)] = Field(
        description="Debian suite, e.g. trixie"
    )
    variant: Literal["minbase", "buildd"] = Field("minbase", description="debootstrap --variant")
    mirror: Annotated[str, Field(pattern=patterns.MIRROR)] | None = Field(
        None, description="Debian mirror URL; default: the first mirror in this host's apt sources"
    )


class Base(Model):
    """Where the build image starts: a registry image pinned by digest, or a debootstrapped one."""

    image: Annotated[str, Field(max_length=512)] | None = Field(
        None, description="registry reference pinned by digest: name:tag@sha256:<64 hex>"
    )
    debootstrap: Debootstrap | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Base:
        _exactly_one(self, ("image", "debootstrap"))
        # A digest that is not 64 hex digits would only fail at the pull, after the source.
        if self.image is not None and not PINNED_IMAGE.search(self.image):
            raise ValueError(
                f"image {self.image!r} is not pinned: write it as name:tag@sha256:<64 hex digits>"
            )
        return self


class Environment(Model):
    """The container the build runs in."""

    dockerfile: Path = Field(description="Dockerfile, relative to the recipe file")
    base: Base | None = Field(
        None,
        description="where the build image starts; left out (with `patches` left out too): "
        "the Debian suite of the source's QEMU series",
    )
    packages: list[Annotated[str, Field(pattern=patterns.PACKAGE)]] | None = Field(
        None,
        max_length=500,
        description="packages the Dockerfile installs (passed as build arg PACKAGES); left "
        "out with `patches`: the series' packages",
    )
    build_args: dict[Annotated[str, Field(pattern=patterns.BUILD_ARG)], ShortText] = Field(
        default_factory=dict, max_length=64, description="extra Docker build args"
    )

    @field_validator("build_args")
    @classmethod
    def _not_the_tools(cls, args: dict[str, str]) -> dict[str, str]:
        owned = sorted(set(args) & TOOL_BUILD_ARGS)
        if owned:
            raise ValueError(
                f"{', '.join(owned)} is set by the tool (BASE_IMAGE is the base's image id, "
                "PACKAGES comes from environment.packages, FOREIGN_ARCHITECTURE from "
                "architecture)"
            )
        for word in args.get("BACKPORTS", "").split():  # apt-get's arguments: packages only
            if not re.fullmatch(patterns.PACKAGE, word):
                raise ValueError(f"BACKPORTS: {patterns.in_words(patterns.PACKAGE, word)}")
        return args


class GitSource(Model):
    url: ShortText = Field(description="repository URL")
    tag: Annotated[str, Field(pattern=patterns.GIT_TAG)]
    commit: Annotated[str, Field(pattern=patterns.GIT_COMMIT)] | None = Field(
        None, description="expected commit of the tag; the run stops if the tag moved"
    )


class TarballSource(Model):
    url: ShortText | None = Field(None, description="where to download the tarball")
    path: Path | None = Field(None, description="a local tarball (used instead of url when set)")
    sha256: Sha256

    @model_validator(mode="after")
    def _somewhere(self) -> TarballSource:
        if self.url is None and self.path is None:
            raise ValueError("set url or path")
        return self


class LocalSource(Model):
    path: Path = Field(description="a QEMU source tree on this host")


class DebianSource(Model):
    """The upstream (orig) tarball of a Debian source package, fetched with apt-get source."""

    package: Annotated[str, Field(pattern=patterns.DEBIAN_PACKAGE)] = "qemu"
    version: Annotated[str, Field(pattern=patterns.DEBIAN_VERSION)]
    suite: Annotated[str, Field(pattern=patterns.DEBIAN_SUITE)]
    sha256: Sha256 = Field(description="sha256 of the .orig.tar.* file")


class MirrorSource(Model):
    """A Debian orig tarball by its path under the configured Debian mirror (no host name in
    the recipe): pins a version the mirror's pool holds whatever its Sources index lists."""

    path: Annotated[str, Field(pattern=patterns.MIRROR_POOL_PATH)] = Field(
        description="the file's path under the mirror, e.g. "
        "pool/main/q/qemu/qemu_11.1.1+ds.orig.tar.xz"
    )
    sha256: Sha256 = Field(description="sha256 of the file")


class Source(Model):
    """The QEMU source: exactly one of git, tarball, local, debian, mirror."""

    git: GitSource | None = None
    tarball: TarballSource | None = None
    local: LocalSource | None = None
    debian: DebianSource | None = None
    mirror: MirrorSource | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Source:
        _exactly_one(self, ("git", "tarball", "local", "debian", "mirror"))
        return self


class Patch(Model):
    path: Path = Field(description="patch file (-p1), relative to the recipe file")
    sha256: Sha256


class Configure(Model):
    flags: list[Annotated[str, Field(min_length=1, max_length=1024)]] | None = Field(
        None,
        max_length=200,
        description="arguments to QEMU's ./configure; left out with `patches`: the series'",
    )

    @field_validator("flags")
    @classmethod
    def _not_the_msi_fields(cls, flags: list[str] | None) -> list[str] | None:
        for flag in flags or ():
            if flag.split("=", 1)[0] in MSI_FLAGS:
                field = flag.split("=", 1)[0].removeprefix("--qemu-ga-")
                raise ValueError(f"{flag.split('=', 1)[0]} is set with msi.{field}, not a flag")
        return flags


class Build(Model):
    targets: list[Annotated[str, Field(pattern=patterns.NINJA_TARGET)]] = Field(
        default_factory=lambda: ["qemu-ga"],
        min_length=1,
        max_length=32,
        description="ninja targets",
    )
    source_date_epoch: Annotated[int, Field(ge=0, le=2**33)] | None = Field(
        None, description="SOURCE_DATE_EPOCH; default: the newest file time in the source"
    )
    jobs: Annotated[int, Field(ge=1, le=256)] | None = Field(None, description="ninja -j")
    memory: Annotated[str, Field(pattern=patterns.MEMORY)] | None = Field(
        None, description="container memory limit, e.g. 4g"
    )
    cpus: Annotated[float, Field(gt=0, le=256)] | None = Field(None, description="CPU limit")
    max_artifact_bytes: Annotated[int, Field(ge=1024, le=1 << 40)] = Field(
        1 << 30,
        description="the most one artifact may weigh when it is copied out of the container "
        "(the copy is refused beyond artifacts x this)",
    )


ServiceKind = Literal["systemd", "sysvinit", "upstart"]


def _every_service_kind() -> list[ServiceKind]:
    return ["systemd", "sysvinit", "upstart"]


class Services(Model):
    """Service definitions written beside the binary (from the seed page)."""

    kinds: list[ServiceKind] = Field(
        default_factory=_every_service_kind,
        max_length=3,
        description="the loose service files written beside the binary; [] for none (the "
        "deb, rpm and tarball carry their own, with exec_path)",
    )
    exec_path: Annotated[str, Field(pattern=patterns.EXEC_PATH)] = Field(
        "/usr/sbin/qemu-ga-patched-static",
        description="where the service files (loose and packaged) run the agent from, and "
        "where the packages install it",
    )


class MsiStrings(Model):
    """Strings the Windows installer shows (QEMU's --qemu-ga-* configure options)."""

    manufacturer: Annotated[str, Field(pattern=patterns.MSI_TEXT)] = Field(
        "QEMU", description="manufacturer (registry: HKLM\\Software\\<manufacturer>)"
    )
    distro: Annotated[str, Field(pattern=patterns.MSI_TEXT)] = Field(
        "Windows", description="second registry path element"
    )
    version: Annotated[str, Field(pattern=patterns.MSI_VERSION)] | None = Field(
        None, description="installer version; default: the QEMU version"
    )

    def configure_flags(self) -> tuple[str, ...]:
        flags = [f"--qemu-ga-manufacturer={self.manufacturer}", f"--qemu-ga-distro={self.distro}"]
        if self.version:
            flags.append(f"--qemu-ga-version={self.version}")
        return tuple(flags)


class Recipe(Model):
    """A qga-builder recipe."""

    name: Name = Field(description="recipe name; names the output directory and the image")
    description: ShortText | None = None
    target: Literal["linux", "windows"] = Field(
        "linux", description="linux (native build) or windows (mingw-w64 cross build)"
    )
    architecture: Literal["x86_64", "aarch64"] = Field(
        "x86_64",
        description="the machine the Linux agent and its packages are for: x86_64 (a native "
        "build) or aarch64 (cross-compiled in the same build image with Debian's "
        "gcc-aarch64-linux-gnu and the arm64 -dev packages); Windows builds are x86_64 only",
    )
    environment: Environment
    source: Source
    patches: list[Patch] | None = Field(
        None,
        max_length=100,
        description="patches applied in order (-p1), each pinned by sha256. Left out: our patch "
        "set for the source's QEMU series (patches/qemu-X.Y/), with the series' base suite, "
        "packages and configure flags where the recipe does not set them. Listed without "
        "environment.base: applied after the series' set, on the series' base (your own patch "
        "on top of ours). Listed with environment.base: exactly these ([] for none)",
    )
    configure: Configure = Field(default_factory=Configure)
    build: Build = Field(default_factory=Build)
    artifacts: list[Artifact] = Field(min_length=1, max_length=64)
    services: Services | None = None
    msi: MsiStrings | None = Field(None, description="Windows installer strings")
    package: Package | None = Field(
        None, description="deb, rpm and tarball fields; default: see Package"
    )
    vm_test: bool = Field(
        False,
        description="boot the built static agent in a VM after the build and run the agent "
        "contract over virtio-serial (needs qemu-system-x86 on the host)",
    )

    @model_validator(mode="after")
    def _target_fits(self) -> Recipe:
        kinds = {artifact.kind for artifact in self.artifacts}
        if self.target == "linux" and kinds & {"pe", "msi"}:
            raise ValueError("pe and msi artifacts need target: windows")
        if self.target == "windows" and ("static-elf" in kinds or self.vm_test):
            raise ValueError("static-elf artifacts and vm_test need target: linux")
        problem = architecture(self.architecture).recipe_problem(
            self.target, self.vm_test, self.environment.packages, kinds
        )
        if problem:
            raise ValueError(problem)
        if self.msi is not None and self.target != "windows":
            raise ValueError("msi: settings need target: windows")
        packages = sorted(kinds & PACKAGE_KINDS)
        if packages and (self.target != "linux" or "static-elf" not in kinds):
            raise ValueError(
                f"{', '.join(packages)} artifacts package the static Linux agent: they need "
                "target: linux and a static-elf artifact"
            )
        if self.package is not None and not packages:
            raise ValueError("package: settings need a deb, rpm or tarball artifact")
        for kind in packages:
            if sum(artifact.kind == kind for artifact in self.artifacts) > 1:
                raise ValueError(f"the {kind} artifact is listed twice")
        return self

    @model_validator(mode="after")
    def _names_with_a_fixed_version(self) -> Recipe:
        """With package.version set, `{version}` is known now: check the names it makes."""
        version = self.package.version if self.package else None
        if version:
            names = [a.name for a in self.artifacts if a.name and VERSION_PLACEHOLDER in a.name]
            for name in names:
                problem = artifact_name_problem(name.replace(VERSION_PLACEHOLDER, version))
                if problem:
                    raise ValueError(f"artifacts: name {name!r} with package.version: {problem}")
        return self

    @field_validator("artifacts")
    @classmethod
    def _distinct_outputs(cls, artifacts: list[Artifact]) -> list[Artifact]:
        problem = names_problem([a.name for a in artifacts if a.name is not None])
        if problem:
            raise ValueError(problem)
        return artifacts


def json_schema() -> dict[str, Any]:
    schema = Recipe.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "qga-builder recipe"
    return schema


# --- loading ------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """safe_load without aliases (no billion-laughs expansion) and with bounded nesting."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.MarkedYAMLError("aliases are not allowed in recipes", event.start_mark)
        depth = getattr(self, "_depth", 0) + 1
        if depth > MAX_NESTING:
            raise yaml.MarkedYAMLError(
                f"nesting deeper than {MAX_NESTING} levels",
                self.peek_event().start_mark,  # type: ignore[no-untyped-call]
            )
        self._depth = depth
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth = depth - 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # PyYAML keeps the last of two equal keys: the first one would be silently ignored.
        _refuse_duplicate_keys(self, node)
        return super().construct_mapping(node, deep=deep)


MERGE_TAG = "tag:yaml.org,2002:merge"


def _refuse_duplicate_keys(loader: yaml.SafeLoader, node: yaml.MappingNode) -> None:
    first_line: dict[Any, int] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == MERGE_TAG:
            continue  # a complex key is refused by the constructor itself
        key = loader.construct_object(key_node)
        line = key_node.start_mark.line + 1
        if key in first_line:
            raise yaml.MarkedYAMLError(
                problem=f"duplicate key {key!r} at lines {first_line[key]} and {line}",
                problem_mark=key_node.start_mark,
            )
        first_line[key] = line


def parse_yaml(text: str, origin: str) -> dict[str, Any]:
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{origin}:{mark.line + 1}:{mark.column + 1}" if mark else origin
        raise RecipeError(
            f"{where}: YAML error: {exc.problem or exc.context}",
            hint="fix the YAML syntax at that line",
        ) from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise RecipeError(f"{origin}: YAML error: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{origin}: a recipe must be a YAML mapping, not {type(data).__name__}")
    return data


def read_recipe_text(path: Path) -> bytes:
    try:
        if path.stat().st_size > MAX_RECIPE_BYTES:
            raise RecipeError(f"{path}: larger than {MAX_RECIPE_BYTES} bytes; not a recipe")
        return path.read_bytes()
    except FileNotFoundError:
        raise _not_found(path) from None
    except IsADirectoryError:
        raise RecipeError(f"{path}: is a directory, not a recipe file") from None
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read: {exc.strerror}") from None


def _not_found(path: Path) -> RecipeError:
    """Says which recipe was probably meant, but never builds a file the user did not name."""
    meant = recipe_like(path)
    if meant is None:
        return RecipeError(
            f"{path}: recipe file not found", hint="list the recipes with `ls recipes/`"
        )
    return RecipeError(
        f"{path}: recipe file not found; did you mean {meant}?",
        hint=f"give the recipe's path, e.g. {meant}; `ls recipes/` lists the recipes",
    )


def validate_recipe(
    data: dict[str, Any], origin: str, blame: Mapping[str, str] | None = None
) -> Recipe:
    """The recipe as a model; `blame` maps fields that command-line flags set (a field path
    prefix such as "environment.base") to the flag, which their errors then name instead."""
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        lines = error_lines(origin, exc, Recipe, blame)
        message = join_lines([line for _, line in lines])
        if all(flag is not None for flag, _ in lines):
            raise UsageError(message) from None
        raise RecipeError(message) from None
    except RecursionError:
        raise RecipeError(f"{origin}: recipe nests too deeply") from None


def load_recipe_data(path: Path) -> tuple[dict[str, Any], bytes]:
    """Read and parse a recipe file; returns the raw mapping and the file's bytes."""
    raw = read_recipe_text(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(
            f"{path}: not UTF-8 text (byte {exc.start}); recipes must be UTF-8"
        ) from None
    return parse_yaml(text, str(path)), raw


def load_recipe(path: Path) -> Recipe:
    data, _ = load_recipe_data(path)
    return validate_recipe(data, str(path))


def dump_schema() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True)
