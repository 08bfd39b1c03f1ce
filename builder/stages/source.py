"""Stage: fetch the QEMU source named by the plan and check it against its pin.

Every kind ends as an archive to send into the build container: a verified tarball (checked
member by member once per digest), or an uncompressed tar made from a git checkout or local tree.
Nothing here starts a container: a wrong digest stops the run before Docker is asked for anything.
"""

from __future__ import annotations

import configparser
import json
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.config.plan import SourcePlan
from builder.errors import HostToolError, InputError
from builder.formats.archives import TarballInfo, inspect_tarball, tar_directory
from builder.formats.checksums import sha256_bytes, sha256_file, verify_digest
from builder.host import debian
from builder.host.cache import Cache
from builder.host.locks import exclusive
from builder.log import LineSink, StepOutput
from builder.stages.context import RunContext


@dataclass(frozen=True)
class PreparedSource:
    archive: Path  # a tar (any compression) whose members sit under one top directory
    strip_components: int
    sha256: str  # of `archive`
    newest_mtime: int  # default SOURCE_DATE_EPOCH
    record: dict[str, Any] = field(default_factory=dict)  # what the manifest says about it
    temporary: bool = False  # archive made for this run, delete after use

    def cleanup(self) -> None:
        if self.temporary:
            self.archive.unlink(missing_ok=True)


def prepare_source(plan: SourcePlan, cache: Cache, log: LineSink) -> PreparedSource:
    match plan.kind:
        case "debian":
            return _debian(plan, cache, log)
        case "tarball":
            return _tarball(plan, cache, log)
        case "git":
            return _git(plan, cache, log)
        case "local":
            assert plan.path is not None
            return _tree(plan.path, {"kind": "local", "path": str(plan.path)}, cache, log)
    raise AssertionError(plan.kind)


def _checked_tarball(path: Path, sha256: str, cache: Cache, what: str) -> TarballInfo:
    """Inspect a tarball's members once per digest; the verdict is cached under its sha256."""
    marker = cache.checked / f"{sha256}.json"
    if marker.is_file():
        return TarballInfo(**json.loads(marker.read_text()))
    info = inspect_tarball(path, what=what)
    marker.write_text(json.dumps(info.__dict__))
    return info


def _from_tarball(path: Path, sha256: str, record: dict[str, Any], cache: Cache) -> PreparedSource:
    info = _checked_tarball(path, sha256, cache, "source tarball")
    return PreparedSource(
        archive=path,
        strip_components=1 if info.top_dir else 0,
        sha256=sha256,
        newest_mtime=info.newest_mtime,
        record={**record, "sha256": sha256, "top_dir": info.top_dir, "members": info.members},
    )


def _debian(plan: SourcePlan, cache: Cache, log: LineSink) -> PreparedSource:
    assert plan.package and plan.version and plan.suite and plan.sha256
    dest = cache.sources / "debian"
    pattern = f"{plan.package}_{debian.upstream_version(plan.version)}.orig.tar.*"
    present = [p for p in sorted(dest.glob(pattern)) if sha256_file(p) == plan.sha256]
    if present:
        log(f"using cached {present[0].name}")
        path = present[0]
    else:
        with exclusive(cache.lock_path(f"apt-{plan.suite}"), f"apt state for {plan.suite}", log):
            log(f"fetching {plan.package}={plan.version} from {plan.suite} with apt-get source")
            path = debian.fetch_orig_tarball(
                plan.package, plan.version, plan.suite, dest, cache.apt, log
            )
        verify_digest(path, plan.sha256, "source.debian")
    record = {
        "kind": "debian",
        "package": plan.package,
        "version": plan.version,
        "suite": plan.suite,
        "file": path.name,
    }
    return _from_tarball(path, plan.sha256, record, cache)


def _tarball(plan: SourcePlan, cache: Cache, log: LineSink) -> PreparedSource:
    assert plan.sha256
    if plan.path is not None:
        if not plan.path.is_file():
            raise InputError(f"source.tarball.path: {plan.path} does not exist")
        path = plan.path
    else:
        assert plan.url
        path = cache.sources / f"{plan.sha256[:16]}-{Path(plan.url).name or 'source.tar'}"
        if not path.is_file():
            _download(plan.url, path, log)
    verify_digest(path, plan.sha256, "source.tarball")
    record = {"kind": "tarball", "url": plan.url, "path": str(plan.path) if plan.path else None}
    return _from_tarball(path, plan.sha256, record, cache)


def _download(url: str, dest: Path, log: LineSink) -> None:
    log(f"downloading {url}")
    partial = dest.with_suffix(dest.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        partial.unlink(missing_ok=True)
        raise InputError(
            f"source.tarball.url: cannot download {url}: {exc}",
            hint="download it yourself and set `path:` (or use --source PATH)",
        ) from None
    partial.rename(dest)


def _git(plan: SourcePlan, cache: Cache, log: LineSink) -> PreparedSource:
    assert plan.url and plan.tag
    if shutil.which("git") is None:
        raise HostToolError("source.git needs git on this host", hint="apt-get install git")
    checkout = cache.git / sha256_bytes(f"{plan.url}\n{plan.tag}".encode())[:16]
    if not (checkout / ".git").is_dir():
        shutil.rmtree(checkout, ignore_errors=True)
        log(f"cloning {plan.url} at {plan.tag}")
        _git_cmd(
            ["clone", "--depth", "1", "--branch", plan.tag, "--", plan.url, str(checkout)],
            None,
            log,
            f"cannot clone {plan.url} at {plan.tag}",
        )
    commit = _git_cmd(["rev-parse", "HEAD"], checkout, log, "cannot read the checkout").strip()
    if plan.commit and commit != plan.commit:
        raise InputError(
            f"source.git: tag {plan.tag} of {plan.url} is at {commit}, "
            f"the recipe pins {plan.commit}",
            hint="the tag moved upstream: check why, then update `commit:`",
        )
    record = {"kind": "git", "url": plan.url, "tag": plan.tag, "commit": commit}
    record["subprojects"] = populate_subprojects(checkout, log)
    prepared = _tree(checkout, record, cache, log)
    commit_time = _git_cmd(["log", "-1", "--format=%ct"], checkout, log, "cannot read the commit")
    return PreparedSource(
        archive=prepared.archive,
        strip_components=prepared.strip_components,
        sha256=prepared.sha256,
        newest_mtime=int(commit_time.strip()),
        record=prepared.record,
        temporary=True,
    )


# What QEMU's release tarballs carry under subprojects/ (scripts/archive-source.sh) and a git
# checkout lacks; configure refuses --disable-download without keycodemapdb, and the compile has
# no network. Fetched on the host, at the revision the .wrap pins.
RELEASE_SUBPROJECTS = ("keycodemapdb", "berkeley-softfloat-3", "berkeley-testfloat-3")


def populate_subprojects(checkout: Path, log: LineSink) -> dict[str, str]:
    fetched: dict[str, str] = {}
    for name in RELEASE_SUBPROJECTS:
        wrap = checkout / "subprojects" / f"{name}.wrap"
        target = checkout / "subprojects" / name
        if not wrap.is_file() or (target.is_dir() and any(target.iterdir())):
            continue
        parser = configparser.ConfigParser()
        parser.read(wrap)
        if not parser.has_section("wrap-git"):
            continue
        section = parser["wrap-git"]
        url, revision = section.get("url"), section.get("revision")
        if not url or not revision:
            raise InputError(f"source.git: {wrap.name} names no url or revision")
        log(f"fetching subproject {name} at {revision[:12]} from {url}")
        target.mkdir(parents=True, exist_ok=True)
        _git_cmd(["init", "-q", str(target)], None, log, f"cannot create {target}")
        _git_cmd(
            ["fetch", "-q", "--depth", "1", url, revision],
            target,
            log,
            f"cannot fetch subproject {name} from {url}",
        )
        _git_cmd(["checkout", "-q", "FETCH_HEAD"], target, log, f"cannot check out {name}")
        overlay = section.get("patch_directory")
        if overlay and (checkout / "subprojects" / "packagefiles" / overlay).is_dir():
            shutil.copytree(
                checkout / "subprojects" / "packagefiles" / overlay, target, dirs_exist_ok=True
            )
        fetched[name] = revision
    return fetched


def _git_cmd(args: list[str], cwd: Path | None, log: LineSink, what: str) -> str:
    process = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if process.returncode != 0:
        for line in process.stderr.splitlines():
            log(line)
        raise InputError(f"source.git: {what}: {process.stderr.strip().splitlines()[-1:]}")
    return process.stdout


def _tree(root: Path, record: dict[str, Any], cache: Cache, log: LineSink) -> PreparedSource:
    if not (root / "configure").is_file() or not (root / "qga").is_dir():
        raise InputError(
            f"source: {root} does not look like a QEMU source tree (no configure, qga/)"
        )
    log(f"packing {root}")
    newest = 0
    for path in root.rglob("*"):
        if ".git" not in path.parts:
            newest = max(newest, int(path.lstat().st_mtime))
    with tempfile.NamedTemporaryFile(dir=cache.dir("tmp"), suffix=".tar", delete=False) as out:
        archive = Path(out.name)
    try:
        tar_directory(root, archive, arcname="src")
    except BaseException:
        archive.unlink(missing_ok=True)
        raise
    digest = sha256_file(archive)
    return PreparedSource(
        archive=archive,
        strip_components=1,
        sha256=digest,
        newest_mtime=newest,
        record={**record, "tree_tar_sha256": digest},
        temporary=True,
    )


def fetch(ctx: RunContext, output: StepOutput) -> None:
    """Stage `source`: fetch and check the source; choose SOURCE_DATE_EPOCH."""
    ctx.source = prepare_source(ctx.plan.source, ctx.cache, output.line)
    if ctx.plan.source_date_epoch is not None:
        ctx.source_date_epoch, ctx.source_date_epoch_origin = ctx.plan.source_date_epoch, "recipe"
    else:
        ctx.source_date_epoch = ctx.source.newest_mtime
        ctx.source_date_epoch_origin = "newest file in the source"
    output.line(f"SOURCE_DATE_EPOCH={ctx.source_date_epoch} ({ctx.source_date_epoch_origin})")
