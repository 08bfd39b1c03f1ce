"""The commands run inside the build container, one function per step.

Each returns the argv and working directory of one `exec`; the orchestrator runs them in order,
checks the real exit code, and tees the output into the step's log.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from builder.config.layout import WORK, Layout
from builder.config.plan import ArtifactPlan


@dataclass(frozen=True)
class Command:
    """One `exec`: `step` names it (logs, and the orchestrator tests' fake engine, tell steps
    apart by it, never by the script's text)."""

    step: str
    argv: tuple[str, ...]
    workdir: str = WORK


def environment(source_date_epoch: int) -> dict[str, str]:
    """The same environment for every step: pinned time, locale and zone."""
    return {
        "SOURCE_DATE_EPOCH": str(source_date_epoch),
        "TZ": "UTC",
        "LC_ALL": "C.UTF-8",
        "HOME": "/home/builder",
    }


CCACHE_DIR = "/ccache"  # the compiler cache volume's mount point (Dockerfile.linux makes it)
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def ccache_environment() -> dict[str, str]:
    """ccache through Debian's compiler links (/usr/lib/ccache first on PATH). No BASEDIR: it
    would rewrite the compiler's absolute paths to relative ones, which -ffile-prefix-map then
    misses (so __FILE__ strings, and the artifacts, would change); plain runs share one build
    root instead. Freshly unpacked files have new ctimes, which must not disable direct-mode
    hits."""
    return {
        "CCACHE_DIR": CCACHE_DIR,
        "CCACHE_COMPILERCHECK": "content",
        "CCACHE_SLOPPINESS": "include_file_ctime,include_file_mtime",
        "CCACHE_MAXSIZE": "2G",
        "PATH": f"/usr/lib/ccache:{_PATH}",
    }


def ccache_probe() -> Command:
    """Whether the image can use the volume: ccache, its compiler links, a writable mount."""
    return _sh(
        "ccache-probe",
        f"command -v ccache >/dev/null && test -e /usr/lib/ccache/cc && test -w {CCACHE_DIR}"
        " && ccache --version | head -n 1",
        "/",
    )


def ccache_stats(zero: bool) -> Command:
    if zero:
        return _sh("ccache-zero", "ccache --zero-stats", "/")
    return _sh("ccache-stats", "ccache --print-stats", "/")


def with_umask(command: Command, umask: str) -> Command:
    return Command(
        command.step,
        ("sh", "-c", f'umask {umask} && exec "$@"', "sh", *command.argv),
        command.workdir,
    )


def _sh(step: str, script: str, workdir: str = WORK) -> Command:
    return Command(step, ("sh", "-eu", "-c", script), workdir)


def prepare_dirs(layout: Layout) -> Command:
    dirs = (layout.incoming, layout.src, layout.build, layout.patches, layout.artifacts)
    return _sh("prepare", f"mkdir -p {' '.join(dirs)}")


def unpack(layout: Layout, archive_name: str, strip_components: int) -> Command:
    archive = shlex.quote(f"{layout.incoming}/{archive_name}")
    return _sh(
        "unpack",
        f"tar -xf {archive} -C {layout.src} --strip-components={strip_components}"
        f" --no-same-owner && rm -f {archive}"
        f' && echo "unpacked $(find {layout.src} -type f | wc -l) files"'
        f" && cat {layout.src}/VERSION",
    )


def apply_patch(layout: Layout, container_name: str) -> Command:
    return Command(
        "patch",
        (
            "patch",
            "-p1",
            "--forward",
            "--batch",
            "--no-backup-if-mismatch",
            "-i",
            f"{layout.patches}/{container_name}",
        ),
        layout.src,
    )


def configure(layout: Layout, flags: Sequence[str]) -> Command:
    return Command(
        "configure", (f"{layout.src}/configure", *flags, *layout.prefix_map_flags()), layout.build
    )


def compile_targets(layout: Layout, targets: Sequence[str], jobs: int | None) -> Command:
    job_args = ("-j", str(jobs)) if jobs else ()
    return Command("compile", ("ninja", "-C", layout.build, *job_args, *targets), layout.build)


def install(
    layout: Layout, artifacts: Sequence[ArtifactPlan], strip_tool: str = "strip"
) -> Command:
    """Copy each artifact to its final name, strip it, and checksum the lot inside the container."""
    lines = []
    for artifact in artifacts:
        src = shlex.quote(f"{layout.build}/{artifact.path}")
        dest = shlex.quote(f"{layout.artifacts}/{artifact.name}")
        lines.append(f"install -m 0755 {src} {dest}")
        if artifact.strip:
            lines.append(f"{strip_tool} --strip-all {dest}")
    lines.append(
        f"cd {layout.artifacts} && sha256sum -- * > {layout.checksums} && cat {layout.checksums}"
    )
    return _sh("install", "\n".join(lines))


def version(layout: Layout, artifact_name: str, runner: Sequence[str] = ()) -> Command:
    """`qemu-ga --version`; `runner` runs another machine's binary (qemu-aarch64, explicitly:
    the container has no binfmt_misc registration to do it)."""
    return Command("version", (*runner, f"{layout.artifacts}/{artifact_name}", "--version"))


PATHS_MARK = "== qga-builder: agent copied to "


def agent_paths(layout: Layout, artifact_name: str, runner: Sequence[str] = ()) -> Command:
    """`qemu-ga -D -F` (its settings, the default fsfreeze hook among them) where it was built
    and from a copy under another directory, as a tarball user's /opt/x: built-in paths must
    not move with the binary. No config file is there, so the defaults show."""
    agent = shlex.quote(f"{layout.artifacts}/{artifact_name}")
    elsewhere = f"{layout.exchange}/paths-check/opt/x"
    run = "".join(f"{shlex.quote(word)} " for word in runner)
    return _sh(
        "agent-paths",
        f"mkdir -p {elsewhere} && cp {agent} {elsewhere}/qemu-ga"
        f" && echo '{PATHS_MARK}{layout.artifacts}' && {run}{agent} -D -F"
        f" && echo '{PATHS_MARK}{elsewhere}' && {run}{elsewhere}/qemu-ga -D -F"
        f" && rm -rf {layout.exchange}/paths-check",
    )


def package_inventory() -> Command:
    """Every installed package as `name<TAB>version<TAB>arch`: dpkg on Debian/Ubuntu, rpm on
    Fedora."""
    dpkg = "dpkg-query -W -f='${Package}\\t${Version}\\t${Architecture}\\n'"
    rpm = "rpm -qa --qf '%{NAME}\\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}\\t%{ARCH}\\n' | sort"
    return _sh(
        "inventory",
        "echo \"distribution $(sed -n 's/^PRETTY_NAME=//p' /etc/os-release | tr -d '\\\"')\";"
        f" if command -v dpkg-query >/dev/null; then echo format deb; {dpkg};"
        f" else echo format rpm; {rpm}; fi",
    )


def inspect_msi(layout: Layout, msi_name: str, tables: Sequence[str]) -> Command:
    """Export the MSI's tables and extract its files into <root>/inspect (msitools)."""
    msi = shlex.quote(f"{layout.artifacts}/{msi_name}")
    inspect = layout.inspect
    exports = " && ".join(
        f"msiinfo export {msi} {table} > {inspect}/{table}.idt" for table in tables
    )
    return _sh(
        "inspect-msi",
        f"rm -rf {inspect} && mkdir -p {inspect}/files && {exports}"
        f" && msiextract -C {inspect}/files {msi} > {inspect}/extracted.txt"
        f" && msiinfo streams {msi} && cat {inspect}/extracted.txt",
    )


SBOM_DIR = "/tmp/qga-sbom"
LINK_MAP = f"{SBOM_DIR}/link.map"


def relink_with_map(layout: Layout, target: str, strip_tool: str) -> Command:
    """The agent's own link command (ninja's last command for `target`), run again into a
    scratch file of the same name with a link map: what the link really took. The relinked
    file, and a copy stripped as the artifact is, have their sha256 printed: the same bytes say
    it is the same link."""
    quoted = shlex.quote(target)
    relinked = f"{SBOM_DIR}/{target.rsplit('/', 1)[-1]}"  # the name's suffix kept (.exe)
    script = f"""
line=$(ninja -t commands {quoted} | tail -n 1)
case "$line" in *" -o "{quoted}" "*) ;; *) echo "no link command for {target}" >&2; exit 3;; esac
mkdir -p {SBOM_DIR}
line=$(printf '%s\\n' "$line" | sed "s| -o {target} | -o {relinked} |")
eval "$line -Wl,-Map={LINK_MAP}"
{strip_tool} --strip-all -o {relinked}.stripped {relinked}
sha256sum {relinked} {relinked}.stripped
"""
    return _sh("sbom-link", script, layout.build)


def file_owners(paths: Sequence[str], dll_names: Sequence[str] = (), build: str = "") -> Command:
    """Where each file comes from, in one pass of dpkg: `FILE path real-path` for each path,
    and for each DLL name either `BUILT name path` (the build made it, in `build`), `DLL name
    real-path` (found by the cross toolchain's gcc, else in the mingw sysroot's bin/) or
    `MISSING name`; then dpkg's own lines: `S pkg[:arch][, pkg]: real-path` for each owned
    real path (dpkg -S), and `Q package version arch source source-version pkg[:arch]` for
    each owner (the last as dpkg -S names it: a multiarch package installed for the build
    machine and for a cross build's target is two packages).
    Tab-separated; the host joins them."""
    script = r"""
FIELDS='Q\t${Package}\t${Version}\t${Architecture}\t${source:Package}\t${source:Version}\t${binary:Package}\n'
D=/tmp/qga-sbom; mkdir -p "$D"; : > "$D/owned"
real() { readlink -f -- "$1" 2>/dev/null || printf '%s' "$1"; }
for path in "$@"; do
  case "$path" in
    DLL:*)
      name=${path#DLL:}
      built=$(find "$BUILD" -name "$name" -type f -print 2>/dev/null | head -n 1)
      if [ -n "$built" ]; then printf 'BUILT\t%s\t%s\n' "$name" "$built"; continue; fi
      found=$(x86_64-w64-mingw32-gcc -print-file-name="$name" 2>/dev/null || true)
      case "$found" in /*) ;; *) found="${MINGW_SYSROOT:-/opt/mingw64}/bin/$name";; esac
      if [ ! -f "$found" ]; then printf 'MISSING\t%s\n' "$name"; continue; fi
      r=$(real "$found"); printf 'DLL\t%s\t%s\n' "$name" "$r";;
    *) r=$(real "$path"); printf 'FILE\t%s\t%s\n' "$path" "$r"
       [ "$r" = "$path" ] || printf '%s\n' "$path" >> "$D/owned";;
  esac
  printf '%s\n' "$r" >> "$D/owned"
done
tr '\n' '\0' < "$D/owned" | xargs -0 -r dpkg -S -- > "$D/dpkg-s" 2>/dev/null || true
grep -v '^diversion ' "$D/dpkg-s" | sed 's/^/S\t/' || true
grep -v '^diversion ' "$D/dpkg-s" | sed 's/: .*//; s/, /\n/g' | sort -u \
  > "$D/packages" || true
if [ -s "$D/packages" ]; then xargs -r dpkg-query -W -f="$FIELDS" < "$D/packages"; fi
"""
    argv = [*paths, *(f"DLL:{name}" for name in dll_names)]
    script = f"BUILD={shlex.quote(build or '/nonexistent')}\n" + script
    return Command("sbom-owners", ("sh", "-eu", "-c", script, "sh", *argv), "/")


SIGNED_DIR = "/tmp/qga-signed"


def msi_with_signed_files(layout: Layout, target: str, msi_name: str, signed: str) -> Command:
    """The MSI made again by QEMU's own wixl command (ninja's for `target`), from copies of its
    input trees (BUILD_DIR, BIN_DIR) in which every executable and DLL that has a signed copy in
    `signed` (named by the unsigned file's sha256) is that copy; written over the artifact, and
    its new ProductCode printed (wixl makes one each time)."""
    quoted = shlex.quote(target)
    msi = shlex.quote(f"{layout.artifacts}/{msi_name}")
    script = f"""
line=$(ninja -t commands {quoted} | tail -n 1)
case "$line" in *wixl*" -o "{quoted}" "*) ;;
  *) echo "no wixl command for {target}" >&2; exit 3;; esac
bin=$(printf '%s\\n' "$line" | sed -n 's|.* -D BIN_DIR=\\([^ ]*\\) .*|\\1|p')
[ -n "$bin" ] && [ -d "$bin" ] || {{ echo "wixl's BIN_DIR not found in: $line" >&2; exit 3; }}
S={SIGNED_DIR}; rm -rf "$S"; mkdir -p "$S/build" "$S/bin"
cp -as "$PWD/." "$S/build/"
cp -a "$bin/." "$S/bin/"
replaced=0
for f in $(find "$S/build" "$S/bin" \\( -name '*.exe' -o -name '*.dll' \\) \\
    \\( -type f -o -type l \\)); do
  d=$(sha256sum < "$f" | cut -d' ' -f1)
  if [ -f {shlex.quote(signed)}/"$d" ]; then
    rm -f "$f"; cp {shlex.quote(signed)}/"$d" "$f"; replaced=$((replaced+1))
  fi
done
echo "signed copies in place: $replaced"
line=$(printf '%s\\n' "$line" | sed -e "s| -D BUILD_DIR=$PWD | -D BUILD_DIR=$S/build |" \\
  -e "s| -D BIN_DIR=$bin | -D BIN_DIR=$S/bin |" -e "s| -o {target} | -o $S/out.msi |")
for want in " -D BUILD_DIR=$S/build " " -D BIN_DIR=$S/bin " " -o $S/out.msi "; do
  case "$line" in *"$want"*) ;;
    *) echo "could not point wixl at the signed copies: $line" >&2; exit 3;; esac
done
eval "$line"
mv "$S/out.msi" {msi}
msiinfo export {msi} Property | sed -n 's/^ProductCode\\t/PRODUCTCODE /p'
rm -rf "$S"
"""
    return _sh("msi-signed", script, layout.build)
