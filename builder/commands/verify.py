"""`qga-builder verify`: prove a recipe builds bit for bit the same, or check artifacts against a
published SHA256SUMS (an output directory's or a merged release's); with --public-key, check a
signed directory's signature and sums only, without Docker (outputs/signed_dir.py).

Two builds differ on purpose in build directory, hostname, umask and wall-clock time, each in a
fresh container; every artifact must come out identical. On a mismatch, diffoscope (Debian's
`diffoscope-minimal`) writes a report of what differs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path

from builder import pipeline
from builder.commands.common import load_plan, overrides_from
from builder.commands.signing import optional_public_key
from builder.config.layout import Variation
from builder.engine import Engine
from builder.errors import InputError, OutputError, UsageError, VerifyError
from builder.formats.checksums import parse_sha256sums, sha256_file
from builder.formats.manifest import LOGS_DIR, MANIFEST_NAME, SIGNATURE_NAME, SUMS_NAME
from builder.formats.provenance import PROVENANCE_NAME
from builder.formats.release import MANIFESTS_DIR
from builder.formats.sbom import SBOM_NAME
from builder.formats.signed_sums import artifact_lines
from builder.host.attestation_keys import load_public_key
from builder.host.cache import Cache
from builder.host.files import is_real_dir, replace_file, replacing_writer, write_new_file
from builder.log import get_logger
from builder.outputs.attested_dir import ATTESTATION_NAME, check_attestations
from builder.outputs.signed_dir import check_signed_directory
from builder.outputs.unsigned_view import signed_names, unsigned_view

VARIATIONS = (
    ("a", "0022"),
    ("b", "0002"),
)


VERIFY_MARKER = ".qga-builder-verify"
REPORT_NAME = "verify.json"
DIFFOSCOPE_NAME = "diffoscope.txt"
# What `verify` writes into its directory: the marker, reports, the builds and their locks and
# staging directories (exact names).
_OWN_ENTRY = re.compile(
    r"^(?:\.qga-builder-verify|verify\.json|diffoscope\.txt|a|b|build"
    r"|\.(?:a|b|build)\.(?:lock|(?:tmp|old)-[a-z0-9]{4,40})"
    r"|\.(?:verify\.json|diffoscope\.txt)\.new-[0-9a-f]{8})$"
)


def default_directory(recipe_name: str) -> Path:
    """Where `verify RECIPE` writes without --output (its --help says so)."""
    return Path("out") / f"{recipe_name}.verify"


def claim_directory(root: Path) -> None:
    """Make `verify`'s directory, or accept one it made before; refuse anything else (exit 9)."""
    if not os.path.lexists(root):
        root.mkdir(parents=True)
        write_new_file(root / VERIFY_MARKER, b"qga-builder verify\n")
        return
    if not is_real_dir(root):
        reason = "it is a symbolic link or not a directory"
    else:
        entries = os.listdir(root)
        if not entries:
            write_new_file(root / VERIFY_MARKER, b"qga-builder verify\n")
            return
        strangers = sorted(name for name in entries if not _OWN_ENTRY.match(name))
        if VERIFY_MARKER not in entries:
            reason = "it has no verify marker"
        elif strangers:
            reason = f"it holds files qga-builder did not write ({', '.join(strangers[:5])})"
        else:
            return
    raise OutputError(
        f"verify directory {root} was not made by qga-builder verify ({reason}); refusing to "
        "write into it",
        hint="choose a new directory with --output DIR",
    )


@dataclass
class Comparison:
    same: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # expected, not produced
    extra: list[str] = field(default_factory=list)  # produced, not expected

    @property
    def ok(self) -> bool:
        return not (self.different or self.missing or self.extra)

    def describe(self) -> str:
        parts = []
        if self.different:
            parts.append("differ: " + ", ".join(self.different))
        if self.missing:
            parts.append("missing: " + ", ".join(self.missing))
        if self.extra:
            parts.append("not in the reference: " + ", ".join(self.extra))
        return "; ".join(parts) or "identical"


def read_sums(path: Path) -> dict[str, str]:
    try:
        return parse_sha256sums(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such checksum file") from None
    except ValueError as exc:
        raise InputError(f"{path}: not a SHA256SUMS file: {exc}") from None


def compare(expected: dict[str, str], actual: dict[str, str]) -> Comparison:
    result = Comparison()
    for name in sorted(set(expected) | set(actual)):
        if name not in actual:
            result.missing.append(name)
        elif name not in expected:
            result.extra.append(name)
        elif expected[name] == actual[name]:
            result.same.append(name)
        else:
            result.different.append(name)
    return result


# What a release directory holds besides its artifacts: never "extra".
RELEASE_RECORDS = frozenset(
    {
        SUMS_NAME,
        MANIFEST_NAME,
        PROVENANCE_NAME,
        LOGS_DIR,
        SIGNATURE_NAME,
        ATTESTATION_NAME,
        SBOM_NAME,
    }
)


def check_directory(
    directory: Path, sums_file: Path, *, artifacts_only: bool = False
) -> Comparison:
    """Hash the files that sums_file names inside directory and compare; a file present but
    not listed (an added `libevil.so`) is reported as extra. `artifacts_only` (a SHA256SUMS
    published elsewhere): a signed output's lines for its manifest, provenance and step logs,
    which differ from run to run, are left out."""
    expected = read_sums(sums_file)
    if artifacts_only:
        expected = artifact_lines(expected)
    actual = {
        name: sha256_file(directory / name) for name in expected if (directory / name).is_file()
    }
    for path, name in _entries(directory):
        if name not in expected and name not in RELEASE_RECORDS:
            actual[name] = sha256_file(path) if path.is_file() else "(not a regular file)"
    return compare(expected, actual)


def _entries(directory: Path) -> list[tuple[Path, str]]:
    """(path, name as SHA256SUMS names it); a merged release's manifests/ is looked into."""
    result = []
    for path in sorted(directory.iterdir()):
        if path.name == MANIFESTS_DIR and is_real_dir(path):
            result += [(child, f"{MANIFESTS_DIR}/{child.name}") for child in sorted(path.iterdir())]
        else:
            result.append((path, path.name))
    return result


def diffoscope_report(first: Path, second: Path, names: list[str], report: Path) -> Path | None:
    """Write a text report of what differs; None when diffoscope is not installed."""
    if shutil.which("diffoscope") is None:
        return None
    with replacing_writer(report) as out:
        for name in names:
            out.write(f"=== {name} ===\n".encode())
            out.flush()
            subprocess.run(
                [
                    "diffoscope",
                    "--text",
                    "-",
                    "--no-progress",
                    str(first / name),
                    str(second / name),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
                timeout=1800,
            )
    return report


def variations(run_id: str) -> list[Variation]:
    return [Variation.for_run(run_id, umask=umask, tag=tag) for tag, umask in VARIATIONS]


def summarize(comparison: Comparison, builds: dict[str, Path], report: Path | None) -> dict:
    return {
        "identical": comparison.same,
        "different": comparison.different,
        "missing": comparison.missing,
        "extra": comparison.extra,
        "builds": {name: str(path) for name, path in builds.items()},
        "diffoscope_report": str(report) if report else None,
    }


def conclude(
    comparison: Comparison, what: str, report: Path | None, summary_path: Path | None, summary: dict
) -> None:
    if summary_path is not None:
        replace_file(summary_path, (json.dumps(summary, indent=2) + "\n").encode())
    log = get_logger()
    if comparison.ok:
        log.info(
            f"{what}: all {len(comparison.same)} artifacts are identical", artifacts=comparison.same
        )
        return
    hint = (
        f"diffoscope report: {report}"
        if report
        else (
            "install diffoscope-minimal for a report of what differs"
            if comparison.different
            else None
        )
    )
    raise VerifyError(f"{what}: {comparison.describe()}", hint=hint)


# What only building a recipe uses: given with an output directory, they would do nothing.
BUILD_OPTIONS = (
    "qemu_ref",
    "source",
    "base_image",
    "output",
    "locked",
    "no_ccache",
    "allow_outside_project",
)


def _refuse_build_options(args: argparse.Namespace, directory: Path) -> None:
    given = [name for name in BUILD_OPTIONS if getattr(args, name) not in (None, False)]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise UsageError(
            f"{flags}: only with a RECIPE to build; {directory} is a directory, which verify "
            "checks against its SHA256SUMS without building",
            hint="leave them out, or give the recipe instead of its output directory",
        )


def _verify_signed(args: argparse.Namespace, target: Path) -> int:
    """`verify --public-key FILE DIR`: signature, sums, nothing else; no engine, no build."""
    if args.against is not None:
        raise UsageError(
            f"--against: not with --public-key, which checks DIR against its own signed {SUMS_NAME}"
        )
    _refuse_build_options(args, target)
    with optional_public_key(args.public_key) as key:
        assert key is not None
        checked = check_signed_directory(target, key)
    get_logger().info(
        f"{target}: {SIGNATURE_NAME} is a good signature by {checked.fingerprint}; all "
        f"{checked.files} files match {SUMS_NAME}, and nothing else is there",
        fingerprint=checked.fingerprint,
        files=checked.files,
    )
    _verify_attested(args, target)
    return 0


def _verify_attested(args: argparse.Namespace, target: Path) -> None:
    """`--cosign-key FILE`: the signed provenance too (no engine, no build)."""
    if args.cosign_key is None:
        return
    attested = check_attestations(target, load_public_key(args.cosign_key))
    get_logger().info(
        f"{target}: {ATTESTATION_NAME} holds {attested.envelopes} envelope(s) signed by the "
        f"key given; all {attested.subjects} subjects match their files",
        public_key_sha256=attested.key_sha256,
    )


def cmd_verify(args: argparse.Namespace) -> int:
    target: Path = args.target
    if args.cosign_key is not None and not target.is_dir():
        raise UsageError("--cosign-key: only with an output or release DIR to check")
    if args.public_key is not None:
        return _verify_signed(args, target)
    if target.is_dir():
        _refuse_build_options(args, target)
        against = args.against or target / SUMS_NAME
        comparison = check_directory(target, against, artifacts_only=args.against is not None)
        summary = summarize(comparison, {"checked": target}, None)
        conclude(comparison, f"{target} against {against}", None, None, summary)
        _verify_attested(args, target)
        return 0
    plan, text = load_plan(
        target,
        overrides_from(args, output=False),
        locked=args.locked,
        allow_outside_project=args.allow_outside_project,
    )
    root = (args.output or default_directory(plan.recipe_name)).absolute()
    claim_directory(root)
    cache = Cache.default()
    if plan.vm_test:  # booting the agent checks it; it makes no byte that is compared
        get_logger().info("verify's builds skip the vm-test stage (run or vm-test boots it)")
        plan = replace(plan, vm_test=False)
    with Engine() as engine:
        if args.against:
            expected = read_sums(args.against)
            result = pipeline.run(
                replace(plan, output_dir=root / "build"),
                engine,
                cache,
                text,
                use_cache=False,
                use_ccache=not args.no_ccache,
            )
            # The artifacts' lines: a signed publication lists its records too (run-specific).
            built = read_sums(result.output_dir / SUMS_NAME)
            reference = artifact_lines(expected)
            if names := signed_names(args.against.parent):
                view = unsigned_view(args.against.parent, reference, result.output_dir, names)
                reference = view.expected
                for note in view.notes:
                    get_logger().info(note)
            comparison = compare(reference, artifact_lines(built))
            summary = summarize(comparison, {"build": result.output_dir}, None)
            what = f"build against {args.against}"
            conclude(comparison, what, None, root / REPORT_NAME, summary)
            return 0
        builds: dict[str, Path] = {}
        for variation in variations(engine.run_id):
            tag = variation.root.rsplit("/", 1)[-1][0]
            get_logger().info(
                f"verify build {tag}",
                root=variation.root,
                hostname=variation.hostname,
                umask=variation.umask,
            )
            result = pipeline.run(
                replace(plan, output_dir=root / tag),
                engine,
                cache,
                text,
                variation=variation,
                run_id=f"{tag}{engine.run_id}",
                use_cache=False,  # verify builds: a cached result would prove nothing
                use_ccache=not args.no_ccache,
            )
            builds[tag] = result.output_dir
    first, second = builds["a"], builds["b"]
    comparison = compare(read_sums(first / SUMS_NAME), read_sums(second / SUMS_NAME))
    report = None
    if comparison.different:
        report = diffoscope_report(first, second, comparison.different, root / DIFFOSCOPE_NAME)
    summary = summarize(comparison, builds, report)
    conclude(comparison, f"{plan.recipe_name} built twice", report, root / REPORT_NAME, summary)
    return 0
