"""Stage: fetch the QEMU source named by the plan and check it against its pin.

Every kind ends as an archive to send into the build container: a verified tarball (checked
member by member once per digest), or an uncompressed tar made from a git checkout or local tree.
Nothing here starts a container: a wrong digest stops the run before Docker is asked for anything.
"""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.config import settings
from builder.config.plan import SourcePlan
from builder.errors import HostToolError, InputError
from builder.formats.archives import (
    FSFREEZE_HOOK,
    MAX_HOOK_BYTES,
    TarballInfo,
    hook_text,
    inspect_tarball,
    tar_directory,
)
from builder.formats.checksums import sha256_bytes, sha256_file, verify_digest
from builder.host import debian
from builder.host.cache import Cache
from builder.host.locks import exclusive
from builder.log import LineSink, StepOutput
from builder.run_context import RunContext


@dataclass(frozen=True)
class PreparedSource:
    archive: Path  # a tar (any compression) whose members sit under one top directory
    strip_components: int
    sha256: str  # of `archive`
    newest_mtime: int  # default SOURCE_DATE_EPOCH
    version: str = ""  # the source's VERSION (empty: it has none)
    fsfreeze_hook: str = ""  # QEMU's fsfreeze hook script (empty: the source has none)
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
        case "mirror":
            return _mirror(plan, cache, log)
        case "git":
            return _git(plan, cache, log)
        case "local":
            assert plan.path is not None
            return _tree(plan.path, {"kind": "local", "path": str(plan.path)}, cache, log)
    raise AssertionError(plan.kind)


def known_version(plan: SourcePlan, cache_root: Path) -> str | None:
    """The source's QEMU version as the run will read it, when this host has the source
    without fetching anything: a local tree or tarball, or a tarball a run already checked
    (its verdict is kept by digest). None otherwise; nothing is written."""
    if plan.kind == "local" and plan.path is not None:
        return _tree_version(plan.path) if plan.path.is_dir() else None
    if plan.sha256 is None:
        return None  # git: known once cloned
    marker = cache_root / "checked" / checked_marker_name(plan.sha256)
    if marker.is_file():
        return TarballInfo(**json.loads(marker.read_text())).version
    if plan.path is not None and plan.path.is_file() and sha256_file(plan.path) == plan.sha256:
        return inspect_tarball(plan.path, what="source tarball").version
    return None


def source_version(plan: SourcePlan, cache: Cache, log: LineSink) -> str:
    """The source's QEMU version, as the run will read it from VERSION: known without fetching
    (a local tree or tarball, a tarball a run already checked, the release a pinned Debian
    version packages, which the run checks against VERSION), else fetched as the run fetches
    it (cached; a fetch that fails is the run's error)."""
    known = known_version(plan, cache.root)
    if known is None and plan.kind == "debian" and plan.version:
        known = debian.qemu_release(plan.version)
    if known is None and plan.kind == "mirror" and plan.mirror_path:
        known = debian.qemu_release(debian.orig_tarball_version(plan.mirror_path))
    if known is not None:
        return known
    log("reading the source's QEMU version: fetching it as a run would (kept in the cache)")
    prepared = prepare_source(plan, cache, log)
    try:
        return prepared.version
    finally:
        prepared.cleanup()


def checked_marker_name(sha256: str) -> str:
    return f"v3-{sha256}.json"


def checked_marker(cache: Cache, sha256: str) -> Path:
    """Where a tarball's verdict is kept (v3: with its VERSION and fsfreeze hook)."""
    return cache.checked / checked_marker_name(sha256)


def _checked_tarball(path: Path, sha256: str, cache: Cache, what: str) -> TarballInfo:
    """Inspect a tarball's members once per digest; the verdict is cached under its sha256."""
    marker = checked_marker(cache, sha256)
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
        version=info.version,
        fsfreeze_hook=info.fsfreeze_hook,
        record={**record, "sha256": sha256, "top_dir": info.top_dir, "members": info.members},
    )


def _debian(plan: SourcePlan, cache: Cache, log: LineSink) -> PreparedSource:
    assert plan.package and plan.version and plan.suite and plan.sha256
    dest = cache.sources / "debian"
    pattern = f"{plan.package}_{debian.upstream_version(plan.version)}.orig.tar.*"
    # Two runs of one source fetch it once: the second waits, then finds it (debian.py keeps
    # apt's own state to one apt-get at a time).
    what = f"the {plan.package} {plan.version} source"
    with exclusive(cache.lock_path(f"source-{plan.sha256[:16]}"), what, log):
        present = [p for p in sorted(dest.glob(pattern)) if sha256_file(p) == plan.sha256]
        if present:
            log(f"using cached {present[0].name}")
            path = present[0]
        else:
            log(f"fetching {plan.package}={plan.version} from {plan.suite} with apt-get source")
            path = debian.fetch_orig_tarball(
                plan.package, plan.version, plan.suite, dest, cache.apt, log
            )
            verify_digest(path, plan.sha256, "source.debian")
    prepared = _from_tarball(path, plan.sha256, _debian_record(plan, path), cache)
    release = debian.qemu_release(plan.version)
    if release is not None and prepared.version.strip() != release:
        prepared.cleanup()
        raise InputError(
            f"source.debian: {plan.package} {plan.version} holds QEMU "
            f"{prepared.version.strip()[:40]!r} (its VERSION), not {release}",
            hint="`plan` reads the release from the Debian version: pin a package whose "
            "orig tarball is that release",
        )
    return prepared


def _mirror(plan: SourcePlan, cache: Cache, log: LineSink) -> PreparedSource:
    """A file of the configured Debian mirror's pool, by path and sha256 (a version the
    mirror's Sources index may not list): downloaded once, checked, cached by digest."""
    assert plan.mirror_path and plan.sha256
    name = Path(plan.mirror_path).name
    path = cache.sources / "mirror" / f"{plan.sha256[:16]}-{name}"
    with exclusive(cache.lock_path(f"source-{plan.sha256[:16]}"), f"the source {name}", log):
        if path.is_file() and sha256_file(path) == plan.sha256:
            log(f"using cached {name}")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            url = f"{debian.host_mirror()}/{plan.mirror_path}"
            _download(
                url,
                path,
                log,
                field="source.mirror.path",
                hint="is the path in this mirror's pool? (QGA_BUILDER_DEBIAN_MIRROR names "
                "another mirror; or download the file and use --source PATH)",
            )
            try:
                verify_digest(path, plan.sha256, "source.mirror")
            except InputError:
                path.unlink(missing_ok=True)  # ours, just written: no wrong file kept
                raise
    record = {"kind": "mirror", "path": plan.mirror_path, "file": name}
    prepared = _from_tarball(path, plan.sha256, record, cache)
    release = debian.qemu_release(debian.orig_tarball_version(plan.mirror_path))
    if release is not None and prepared.version.strip() != release:
        raise InputError(
            f"source.mirror: {name} holds QEMU {prepared.version.strip()[:40]!r} (its VERSION), "
            f"not {release} as its name says",
            hint="`plan` reads the release from the file's name: pin the orig tarball of "
            "that release",
        )
    return prepared


def _debian_record(plan: SourcePlan, path: Path) -> dict[str, Any]:
    return {
        "kind": "debian",
        "package": plan.package,
        "version": plan.version,
        "suite": plan.suite,
        "file": path.name,
    }


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


def _download(
    url: str,
    dest: Path,
    log: LineSink,
    field: str = "source.tarball.url",
    hint: str = "download it yourself and set `source.tarball.path:` (or use --source PATH)",
) -> None:
    log(f"downloading {url}")
    partial = dest.with_suffix(dest.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        partial.unlink(missing_ok=True)
        raise InputError(
            f"{field}: cannot download {url}: {exc}",
            hint=hint,
        ) from None
    partial.rename(dest)


def _git(plan: SourcePlan, cache: Cache, log: LineSink) -> PreparedSource:
    assert plan.url and plan.tag
    if shutil.which("git") is None:
        raise HostToolError("source.git needs git on this host", hint="apt-get install git")
    schemes = allowed_schemes(plan.url)
    check_git_url(plan.url, schemes, "source.git.url")
    if not plan.commit:
        log(
            f"warning: source.git names tag {plan.tag} but no commit: the tag can move; "
            "pin `commit:` (run --locked refuses an unpinned git source)"
        )
    checkout = cache.git / sha256_bytes(f"{plan.url}\n{plan.tag}".encode())[:16]
    if not (checkout / ".git").is_dir():
        shutil.rmtree(checkout, ignore_errors=True)
        log(f"cloning {plan.url} at {plan.tag}")
        _git_cmd(
            ["clone", "--depth", "1", "--branch", plan.tag, "--", plan.url, str(checkout)],
            None,
            log,
            f"cannot clone {plan.url} at {plan.tag}",
            schemes,
        )
    commit = _git_cmd(["rev-parse", "HEAD"], checkout, log, "cannot read the checkout").strip()
    if plan.commit and commit != plan.commit:
        raise InputError(
            f"source.git: tag {plan.tag} of {plan.url} is at {commit}, "
            f"the recipe pins {plan.commit}",
            hint="the tag moved upstream: check why, then update `commit:`",
        )
    record = {"kind": "git", "url": plan.url, "tag": plan.tag, "commit": commit}
    record["subprojects"] = populate_subprojects(checkout, log, schemes)
    prepared = _tree(checkout, record, cache, log)
    commit_time = _git_cmd(["log", "-1", "--format=%ct"], checkout, log, "cannot read the commit")
    return PreparedSource(
        archive=prepared.archive,
        strip_components=prepared.strip_components,
        sha256=prepared.sha256,
        newest_mtime=int(commit_time.strip()),
        version=prepared.version,
        record=prepared.record,
        temporary=True,
    )


# What QEMU's release tarballs carry under subprojects/ (scripts/archive-source.sh) and a git
# checkout lacks; configure refuses --disable-download without keycodemapdb, and the compile has
# no network. Fetched on the host, at the revision the .wrap pins.
RELEASE_SUBPROJECTS = ("keycodemapdb", "berkeley-softfloat-3", "berkeley-testfloat-3")


GIT_REVISION = re.compile(r"^[0-9a-f]{40}$")


def allowed_schemes(source_url: str) -> frozenset[str]:
    """https only; a source that is itself local (file://) may name local subprojects too."""
    return frozenset({"https", "file"} if source_url.startswith("file://") else {"https"})


def check_git_url(url: str, schemes: frozenset[str], where: str) -> None:
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in schemes or url.startswith("-") or any(c.isspace() for c in url):
        allowed = " or ".join(f"{s}://" for s in sorted(schemes))
        raise InputError(
            f"{where}: {url!r} is not an {allowed} URL; refusing it",
            hint="git URLs from a source are data from the internet: only https:// is fetched",
        )


def populate_subprojects(
    checkout: Path, log: LineSink, schemes: frozenset[str] = frozenset({"https"})
) -> dict[str, str]:
    """Fetch the subprojects a release tarball carries, at the commit each .wrap pins.

    A .wrap is data from the internet: its URL must be https (`--` keeps it from being read
    as an option), its revision a 40-hex commit that FETCH_HEAD must equal, and its
    patch_directory a directory under subprojects/packagefiles/ without links.
    """
    fetched: dict[str, str] = {}
    packagefiles = (checkout / "subprojects" / "packagefiles").resolve()
    for name in RELEASE_SUBPROJECTS:
        wrap = checkout / "subprojects" / f"{name}.wrap"
        target = checkout / "subprojects" / name
        if not wrap.is_file() or (target.is_dir() and any(target.iterdir())):
            continue
        where = f"source.git: subprojects/{wrap.name}"
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read_string(wrap.read_text(errors="replace")[:65536])
        except configparser.Error as exc:
            raise InputError(f"{where}: not a wrap file: {str(exc).splitlines()[0]}") from None
        if not parser.has_section("wrap-git"):
            continue
        section = parser["wrap-git"]
        url, revision = section.get("url", ""), section.get("revision", "")
        check_git_url(url, schemes, f"{where}: url")
        if not GIT_REVISION.match(revision):
            raise InputError(
                f"{where}: revision {revision[:60]!r} is not a 40-hex commit; refusing it",
                hint="only a pinned commit can be checked after fetching",
            )
        overlay = _overlay(section.get("patch_directory"), packagefiles, where)
        log(f"fetching subproject {name} at {revision[:12]} from {url}")
        target.mkdir(parents=True, exist_ok=True)
        _git_cmd(["init", "-q", "--", str(target)], None, log, f"cannot create {target}", schemes)
        _git_cmd(
            ["fetch", "-q", "--depth", "1", "--", url, revision],
            target,
            log,
            f"cannot fetch subproject {name} from {url}",
            schemes,
        )
        head = _git_cmd(["rev-parse", "FETCH_HEAD"], target, log, "no FETCH_HEAD", schemes)
        if head.strip() != revision:
            raise InputError(f"{where}: fetched {head.strip()}, the wrap pins {revision}")
        _git_cmd(["checkout", "-q", revision], target, log, f"cannot check out {name}", schemes)
        if overlay is not None:
            shutil.copytree(overlay, target, dirs_exist_ok=True, symlinks=True)
        fetched[name] = head.strip()
    return fetched


def _overlay(name: str | None, packagefiles: Path, where: str) -> Path | None:
    """patch_directory, confined to subprojects/packagefiles/ and free of links."""
    if not name:
        return None
    candidate = (packagefiles / name).resolve()
    if (
        name.startswith("/")
        or ".." in Path(name).parts
        or not candidate.is_relative_to(packagefiles)
        or candidate == packagefiles
    ):
        raise InputError(
            f"{where}: patch_directory {name!r} leaves subprojects/packagefiles/; refusing it"
        )
    if not candidate.is_dir():
        return None
    links = [p for p in candidate.rglob("*") if p.is_symlink()]
    if links:
        raise InputError(f"{where}: patch_directory {name!r} holds a link ({links[0].name})")
    return candidate


def git_environment(schemes: frozenset[str]) -> dict[str, str]:
    """No prompts, no system config, and only the allowed protocols (submodules included)."""
    return {
        "PATH": settings.current().search_path,
        "HOME": str(Path(tempfile.gettempdir())),
        "GIT_ALLOW_PROTOCOL": ":".join(sorted(schemes)),
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "LC_ALL": "C",
    }


def _git_cmd(
    args: list[str],
    cwd: Path | None,
    log: LineSink,
    what: str,
    schemes: frozenset[str] = frozenset({"https"}),
) -> str:
    process = subprocess.run(
        ["git", "-c", "protocol.ext.allow=never", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        env=git_environment(schemes),
    )
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
        version=_tree_version(root),
        fsfreeze_hook=_tree_hook(root),
        record={**record, "tree_tar_sha256": digest},
        temporary=True,
    )


def _tree_version(root: Path) -> str:
    path = root / "VERSION"
    if not path.is_file() or path.is_symlink():
        return ""
    lines = path.read_text(errors="replace")[:64].strip().splitlines()
    return lines[0][:40] if lines else ""


def _tree_hook(root: Path) -> str:
    path = root / FSFREEZE_HOOK
    if not path.is_file() or path.is_symlink():
        return ""
    with path.open("rb") as handle:
        return hook_text(handle.read(MAX_HOOK_BYTES + 1))


def fetch(ctx: RunContext, output: StepOutput) -> None:
    """Stage `source`: fetch and check the source; choose SOURCE_DATE_EPOCH."""
    ctx.source = prepare_source(ctx.plan.source, ctx.cache, output.line)
    if ctx.plan.source_date_epoch is not None:
        ctx.source_date_epoch, ctx.source_date_epoch_origin = ctx.plan.source_date_epoch, "recipe"
    else:
        ctx.source_date_epoch = ctx.source.newest_mtime
        ctx.source_date_epoch_origin = "newest file in the source"
    output.line(f"SOURCE_DATE_EPOCH={ctx.source_date_epoch} ({ctx.source_date_epoch_origin})")
