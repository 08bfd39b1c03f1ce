"""What a signed output directory's SHA256SUMS lists besides the artifacts.

An unsigned output of `run` lists its artifacts only. A signed one (`run --signing-key`) lists
every file it publishes, so that the one signature (SHA256SUMS.asc) covers them all: the
artifacts, manifest.json, provenance.intoto.json, its signed envelope provenance.intoto.jsonl
(with `--attestation-key`) and each step log (`logs/NN-step.log`).
Never SHA256SUMS itself, nor its signature. Those extra lines are the "records": they differ
from run to run (times, run ids), so comparisons of builds (`verify --against`) and the
artifact cache look at the artifact lines only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from builder.formats.manifest import LOGS_DIR, MANIFEST_NAME
from builder.formats.provenance import PROVENANCE_NAME
from builder.formats.release import PROVENANCE_BUNDLE
from builder.formats.sbom import SBOM_NAME

LOG_NAME = re.compile(r"^[0-9]{2}-[a-z0-9-]{1,64}\.log$")  # a run's step logs: 01-source.log
# A run's signed provenance (`--attestation-key`): its statement in a DSSE envelope, one line.
ATTESTATION_NAME = PROVENANCE_BUNDLE
RECORD_FILES = (MANIFEST_NAME, PROVENANCE_NAME)  # in every output; the envelope only if signed


def is_record(name: str) -> bool:
    """manifest.json, provenance.intoto.json(l) or a step log under logs/."""
    if name in RECORD_FILES or name in (ATTESTATION_NAME, SBOM_NAME):
        return True
    folder, slash, file = name.partition("/")
    return bool(slash) and folder == LOGS_DIR and LOG_NAME.match(file) is not None


def artifact_lines(sums: Mapping[str, str]) -> dict[str, str]:
    """The lines of a SHA256SUMS that name artifacts (what two builds must agree on)."""
    return {name: digest for name, digest in sums.items() if not is_record(name)}


def record_lines(sums: Mapping[str, str]) -> dict[str, str]:
    return {name: digest for name, digest in sums.items() if is_record(name)}


def listed_logs(sums: Mapping[str, str]) -> set[str]:
    """The step logs' own names (`01-source.log`) a SHA256SUMS lists."""
    prefix = LOGS_DIR + "/"
    return {name.removeprefix(prefix) for name in sums if name.startswith(prefix)}
