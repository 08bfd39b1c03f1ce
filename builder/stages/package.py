"""Stage `package` (recipes with deb, rpm or tarball artifacts): package the checked static
agent for image builders.

The tarball is written here (pure Python, deterministic). The .deb (dpkg-buildpackage +
debhelper) and the .rpm (rpmbuild) are made in the packager box: a container of the tool's own
(Debian's dpkg-dev, debhelper, rpm, lintian, systemd), unprivileged, with no network, holding
only the agent and the rendered package sources. What comes back is untrusted: extracted within
bounds, then each package is parsed and checked (names, version, files, owners, the agent's
bytes, conffiles) before it becomes an artifact. lintian must find no error and
`systemd-analyze verify` must pass on the unit as installed from the .deb.
"""

from __future__ import annotations

import io
import tarfile
import tempfile
from pathlib import Path

from builder.boxes import container_commands
from builder.boxes.tool_box import ASSETS, TRIXIE, ToolBox
from builder.config.layout import BUILD_UID
from builder.config.plan import Plan
from builder.errors import ArtifactError, InputError, RecipeError
from builder.formats import archives, package_sources, release_tarball
from builder.formats import service_files as sf
from builder.formats.checksums import sha256_file
from builder.formats.manifest import Artifact
from builder.formats.packages import PackageFormatError, read_deb, read_rpm
from builder.host.cache import Cache
from builder.log import StepOutput
from builder.run_context import Container, ContainerEngine, RunContext

PACKAGES = ("dpkg-dev", "debhelper", "rpm", "rpmlint", "lintian", "systemd")
BOX = ToolBox("packager", ASSETS / "Dockerfile.packager", PACKAGES, memory="2g")
BASE = TRIXIE
image_plan = BOX.image_plan
WORK = "/work"
DEFAULT_EXEC_PATH = "/usr/sbin/qemu-ga-patched-static"


def package_spec(
    plan: Plan, qemu_version: str, source_date_epoch: int, fsfreeze_hook: str
) -> package_sources.PackageSpec:
    """The package's fields; a version made from the QEMU version, and the source's hook
    script, are checked here, as soon as they are known (before the compile; the recipe's own
    fields were checked at `validate`)."""
    assert plan.package is not None
    version = plan.release_version(qemu_version)
    problem = package_sources.version_problem(version)
    if problem:
        raise RecipeError(
            f"{plan.recipe_path}: package.version: made from the QEMU version {qemu_version!r}: "
            f"{problem}",
            hint="set package.version in the recipe",
        )
    if not fsfreeze_hook:
        raise InputError(
            f"source: it has no {archives.FSFREEZE_HOOK} (a small shell script), which the "
            "packages ship as the agent's fsfreeze hook",
            hint="build a QEMU source tree or release tarball as upstream ships it",
        )
    return package_sources.PackageSpec(
        name=plan.package.name,
        version=version,
        revision=plan.package.revision,
        maintainer=plan.package.maintainer,
        exec_path=plan.service_exec_path or DEFAULT_EXEC_PATH,
        qemu_version=qemu_version,
        source_date_epoch=source_date_epoch,
        fsfreeze_hook=fsfreeze_hook,
        architecture=plan.arch,
    )


def make_packages(ctx: RunContext, output: StepOutput) -> None:
    plan = ctx.plan
    assert plan.package is not None
    spec = package_spec(plan, ctx.qemu_version, ctx.source_date_epoch, ctx.fsfreeze_hook)
    agent = next(a for a in ctx.artifact_plans if a.kind == "static-elf")
    binary = (ctx.staging / agent.name).read_bytes()
    made: list[tuple[str, str]] = []
    if "tarball" in plan.package.kinds:
        name = f"{spec.tarball_stem}.tar.gz"
        release_tarball.write(ctx.staging / name, spec, binary)
        made.append((name, "tarball"))
    wanted = [k for k in ("deb", "rpm") if k in plan.package.kinds]
    if wanted:
        made += build_in_box(ctx.engine, ctx.cache, spec, binary, wanted, ctx.staging, output)
    for name, kind in made:
        path = ctx.staging / name
        digest, size = sha256_file(path), path.stat().st_size
        ctx.artifacts.append(Artifact(name, digest, size, kind, detail=_detail(kind, spec)))
        output.line(f"{name}: {size} bytes, sha256 {digest}")


def _detail(kind: str, spec: package_sources.PackageSpec) -> str:
    return f"{kind} {spec.name} {spec.version}-{spec.revision}: {spec.exec_path}, unit, udev rule"


def _tar_of(files: dict[str, tuple[bytes, int]], mtime: int) -> bytes:
    """A tar of files and their parent directories, all owned by the box's user."""
    buffer = io.BytesIO()
    parents = {str(p) for name in files for p in Path(name).parents if str(p) != "."}
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in sorted(parents):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, mtime
            info.uid = info.gid = BUILD_UID
            tar.addfile(info)
        for name, (data, mode) in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, mtime
            info.uid = info.gid = BUILD_UID
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _script(spec: package_sources.PackageSpec, wanted: list[str]) -> str:
    """What runs in the box: build, then lint and verify (their output lands in the log)."""
    steps = ["set -eu", "umask 022", f"mkdir -p {WORK}/out"]
    # Another machine's packages: dpkg-buildpackage -a and rpmbuild --target name it (dh_strip
    # and dh_shlibdeps are off, the agent comes stripped and static: no cross binutils needed).
    cross = spec.architecture.cross
    deb_arch = f" -a{spec.deb_architecture}" if cross else ""
    rpm_target = f" --target {spec.rpm_architecture}" if cross else ""
    if "deb" in wanted:
        unit = f"/usr/lib/systemd/system/{sf.SERVICE_NAME}.service"
        steps += [
            f"cd {WORK}/deb/src && dpkg-buildpackage -b{deb_arch} -us -uc -d",
            f"cp {WORK}/deb/{spec.deb_file} {WORK}/out/",
            f"lintian --fail-on error --display-info {WORK}/out/{spec.deb_file}",
            "echo 'lintian: no errors'",
            # The unit as installed, next to systemd's own units (it needs their targets).
            f"dpkg-deb -x {WORK}/out/{spec.deb_file} {WORK}/root",
            f"cp -rn /usr/lib/systemd/system/. {WORK}/root/usr/lib/systemd/system/",
            f"SYSTEMD_LOG_TARGET=console systemd-analyze verify --root={WORK}/root "
            f"{WORK}/root{unit}",
            "echo 'systemd-analyze verify: passed'",
        ]
    if "rpm" in wanted:
        steps += [
            f"mkdir -p {WORK}/rpmdb && cd {WORK}/rpm && rpmbuild -bb --dbpath {WORK}/rpmdb "
            f"--define '_topdir {WORK}/rpmtop' "
            f"--define '_sourcedir {WORK}/rpm'{rpm_target} {spec.name}.spec",
            f"cp {WORK}/rpmtop/RPMS/{spec.rpm_architecture}/{spec.rpm_file} {WORK}/out/",
            f"rpmlint -r {WORK}/rpm/{spec.name}.rpmlintrc {WORK}/out/{spec.rpm_file}",
            "echo 'rpmlint: no errors'",
            f"rpm --dbpath {WORK}/rpmdb -qip {WORK}/out/{spec.rpm_file}",
            f"rpm --dbpath {WORK}/rpmdb -qlvp {WORK}/out/{spec.rpm_file}",
        ]
    return "\n".join(steps) + "\n"


def build_in_box(
    engine: ContainerEngine,
    cache: Cache,
    spec: package_sources.PackageSpec,
    binary: bytes,
    wanted: list[str],
    dest: Path,
    output: StepOutput,
) -> list[tuple[str, str]]:
    """Make the .deb and/or .rpm in the packager box; check them; leave them in `dest`."""
    files: dict[str, tuple[bytes, int]] = {"build.sh": (_script(spec, wanted).encode(), 0o755)}
    for rel, (text, mode) in package_sources.debian_tree(spec).items():
        files[f"deb/src/{rel}"] = (text.encode(), mode)
    files[f"deb/src/{spec.binary_name}"] = (binary, 0o755)
    for rel, (text, mode) in package_sources.rpm_sources(spec).items():
        files[f"rpm/{rel}"] = (text.encode(), mode)
    files[f"rpm/{spec.binary_name}"] = (binary, 0o755)
    with BOX.open(engine, cache, output) as box:
        box.put_archive(WORK, _tar_of(files, spec.source_date_epoch))
        code = box.run(
            ["sh", f"{WORK}/build.sh"],
            on_line=output.line,
            env=container_commands.environment(spec.source_date_epoch),
            workdir=WORK,
        )
        if code != 0:
            raise ArtifactError(
                f"packaging failed in the packager box (exit {code})\n"
                f"  last lines of its log:\n{output.tail_text()}",
                hint=f"full log: {output.log_path}",
            )
        names = _copy_out(box, dest, len(binary), output)
    made = []
    if "deb" in wanted:
        _check_deb(dest / _only(names, spec.deb_file), spec, binary)
        made.append((spec.deb_file, "deb"))
    if "rpm" in wanted:
        _check_rpm(dest / _only(names, spec.rpm_file), spec)
        made.append((spec.rpm_file, "rpm"))
    return made


def _only(names: list[str], expected: str) -> str:
    if expected not in names:
        raise ArtifactError(f"the packager box did not make {expected} (it made {names})")
    return expected


def _copy_out(box: Container, dest: Path, binary_size: int, output: StepOutput) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="qga-packages-", dir=dest) as scratch:
        landing = Path(scratch)
        archives.safe_extract(
            box.get_archive(f"{WORK}/out"),
            landing,
            what="packages from the packager box",
            limits=archives.Limits(max_bytes=4 * binary_size + (16 << 20), max_members=4),
        )
        names = []
        for path in sorted((landing / "out").iterdir()):
            if path.is_file() and path.name.endswith((".deb", ".rpm")):
                path.rename(dest / path.name)
                names.append(path.name)
    output.line(f"copied out of the packager box: {', '.join(names)}")
    return names


def _check_deb(path: Path, spec: package_sources.PackageSpec, binary: bytes) -> None:
    try:
        deb = read_deb(path)
    except PackageFormatError as exc:
        raise ArtifactError(f"{path.name}: not a valid .deb: {exc}") from None
    control = deb.control
    problems = []
    expected = {
        "Package": spec.name,
        "Version": f"{spec.version}-{spec.revision}",
        "Architecture": spec.deb_architecture,
    }
    for key, value in expected.items():
        if control.get(key) != value:
            problems.append(f"{key} is {control.get(key)!r}, expected {value!r}")
    for key in ("Conflicts", "Replaces"):
        if "qemu-guest-agent" not in control.get(key, ""):
            problems.append(f"{key} does not name qemu-guest-agent")
    wanted_files = {
        spec.exec_path.lstrip("/"): binary,
        f"usr/lib/systemd/system/{sf.SERVICE_NAME}.service": spec.file(sf.SYSTEMD).encode(),
        f"usr/lib/udev/rules.d/{sf.UDEV_RULE_NAME}": spec.file(sf.UDEV_RULE).encode(),
        f"etc/init.d/{sf.SERVICE_NAME}": spec.file(sf.SYSVINIT).encode(),
        f"etc/default/{sf.SERVICE_NAME}": spec.file(sf.DEFAULTS).encode(),
        sf.CONF_FILE.lstrip("/"): spec.file(sf.QGA_CONF).encode(),
        sf.HOOK.lstrip("/"): spec.fsfreeze_hook.encode(),
    }
    for name, data in wanted_files.items():
        if deb.data.get(name) != data:
            problems.append(f"/{name} is missing or not what was rendered")
    owners = {(e.uid, e.gid) for e in deb.entries}
    if owners != {(0, 0)}:
        problems.append(f"members owned by {sorted(owners)}, expected root only")
    conffiles = set(deb.conffiles)
    for conffile in (
        f"/etc/default/{sf.SERVICE_NAME}",
        f"/etc/init.d/{sf.SERVICE_NAME}",
        sf.CONF_FILE,
        sf.HOOK,
    ):
        if conffile not in conffiles:
            problems.append(f"{conffile} is not a conffile")
    if problems:
        raise ArtifactError(f"{path.name}: " + "; ".join(problems))


def _check_rpm(path: Path, spec: package_sources.PackageSpec) -> None:
    try:
        rpm = read_rpm(path)
    except PackageFormatError as exc:
        raise ArtifactError(f"{path.name}: not a valid .rpm: {exc}") from None
    tags, problems = rpm.tags, []
    expected = {
        "name": spec.name,
        "version": spec.version,
        "release": spec.revision,
        "arch": spec.rpm_architecture,
    }
    for key, value in expected.items():
        if tags.get(key) != value:
            problems.append(f"{key} is {tags.get(key)!r}, expected {value!r}")
    wanted = {spec.exec_path, *(path for _, path, _ in package_sources.RPM_FILES)}
    missing = sorted(wanted - set(rpm.files))
    if missing:
        problems.append(f"files missing: {', '.join(missing)}")
    if set(tags.get("fileusername", [])) != {"root"}:  # type: ignore[arg-type]
        problems.append("files not owned by root")
    for config in (f"/etc/sysconfig/{sf.SERVICE_NAME}", sf.CONF_FILE):
        if config not in rpm.config_files:
            problems.append(f"{config} is not %config")
    if problems:
        raise ArtifactError(f"{path.name}: " + "; ".join(problems))
