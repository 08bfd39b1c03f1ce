"""Stage `authenticode`: with an Authenticode key (`--authenticode-pfx`, or a PKCS#11 token),
sign the Windows files on the host (osslsigncode: it reads and writes files, runs nothing).

Every executable and DLL the MSI holds, and each `pe` artifact, is signed first; the MSI is then
made again by QEMU's own wixl command from those signed copies (in the build container), made
reproducible as stage `msi` does, and signed itself. The signed MSI is checked as stage `check`
checks one (its DLLs, `--version` and the install under wine). The manifest records each
signed file's digest before signing: `verify` compares those with an unsigned rebuild. Without a
key the stage does nothing and the files stay bit for bit as built.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Any

from builder.boxes import container_commands
from builder.config.layout import BUILD_UID
from builder.config.plan import ArtifactPlan
from builder.errors import ArtifactError, SigningKeyError
from builder.formats import archives, cabinet, msi_rewrite
from builder.formats.checksums import sha256_bytes, sha256_file
from builder.formats.pe import PeFormatError, parse_pe
from builder.host.authenticode import AuthenticodeFailure, AuthenticodeSigner
from builder.log import StepOutput
from builder.run_context import RunContext
from builder.stages import checks

INCOMING = "signed-in"  # under the exchange directory: the signed copies, by unsigned sha256
SIGNING_HINT = (
    "the key signed a trial file before the build; a token removed or a time-stamping server "
    "that stopped answering fails later: run again"
)


def applies(artifacts: tuple[ArtifactPlan, ...]) -> bool:
    return any(artifact.kind in ("pe", "msi") for artifact in artifacts)


def sign(ctx: RunContext, output: StepOutput) -> None:
    signer = ctx.code_signer
    if signer is None:
        output.line("not signed: no Authenticode key (--authenticode-pfx, --authenticode-pkcs11-*)")
        return
    output.line(f"signing with {signer.subject} (certificate sha256 {signer.fingerprint})")
    before = {artifact.name: artifact.sha256 for artifact in ctx.artifacts}
    unsigned_files = {name: dict(c["files"]) for name, c in ctx.msi_contents.items()}
    with tempfile.TemporaryDirectory(prefix="qga-authenticode-") as scratch:
        copies = SignedCopies(signer, Path(scratch), ctx.source_date_epoch, output)
        msis = [a for a in ctx.artifact_plans if a.kind == "msi"]
        for artifact in msis:
            for name, data in _files_of(ctx.staging / artifact.name).items():
                if _is_pe(data):
                    copies.add(data, name)
        for artifact in ctx.artifact_plans:
            if artifact.kind == "pe":
                path = ctx.staging / artifact.name
                signed = copies.add(path.read_bytes(), artifact.name)
                shutil.copyfile(signed, path)
        files = {f"{INCOMING}/{d}": path.read_bytes() for d, path in copies.signed.items()}
        ctx.container.put_files(ctx.layout.exchange, files, uid=BUILD_UID, gid=BUILD_UID)
        incoming = f"{ctx.layout.exchange}/{INCOMING}"
        for artifact in msis:
            _sign_msi(ctx, artifact, copies, incoming, output)
    _record(ctx, signer, before, unsigned_files)


class SignedCopies:
    """One signature per distinct file (the MSI holds one helper under two names)."""

    def __init__(
        self, signer: AuthenticodeSigner, root: Path, signing_time: int, output: StepOutput
    ) -> None:
        self.signer, self.root, self.time, self.output = signer, root, signing_time, output
        self.signed: dict[str, Path] = {}  # unsigned sha256 -> signed copy

    def add(self, data: bytes, name: str) -> Path:
        digest = sha256_bytes(data)
        if digest not in self.signed:
            unsigned, signed = self.root / f"{digest}.in", self.root / digest
            unsigned.write_bytes(data)
            _sign(self.signer, unsigned, signed, self.time, name)
            self.signed[digest] = signed
            self.output.line(f"{name}: signed ({digest[:16]} -> {sha256_file(signed)[:16]})")
        return self.signed[digest]

    def signed_digests(self) -> set[str]:
        return {sha256_file(path) for path in self.signed.values()}


def _sign_msi(
    ctx: RunContext,
    artifact: ArtifactPlan,
    copies: SignedCopies,
    incoming: str,
    output: StepOutput,
) -> None:
    command = container_commands.msi_with_signed_files(
        ctx.layout, artifact.path, artifact.name, incoming
    )
    lines = ctx.run_step(command, output)
    product = next((ln.split()[1] for ln in lines if ln.startswith("PRODUCTCODE ")), None)
    if product is None:
        raise ArtifactError(f"{artifact.name}: the MSI made from signed files has no ProductCode")
    path = ctx.staging / artifact.name
    _take_out(ctx, artifact, path)
    # What it holds must be exactly the signed copies (and the files that are no PE).
    wanted = copies.signed_digests()
    for name, data in _files_of(path).items():
        if _is_pe(data) and sha256_bytes(data) not in wanted:
            raise ArtifactError(f"{artifact.name}: {name} was not replaced by its signed copy")
    codes = msi_rewrite.derive_codes(ctx.plan.recipe_name, ctx.qemu_version, ctx.run_key)
    msi_rewrite.make_reproducible(path, codes, product, ctx.source_date_epoch)
    signed = path.with_name(path.name + ".signed")
    _sign(copies.signer, path, signed, ctx.source_date_epoch, artifact.name)
    signed.replace(path)
    output.line(f"{artifact.name}: made from the signed files, signed")
    ctx.container.put_files(
        ctx.layout.artifacts, {artifact.name: path.read_bytes()}, uid=BUILD_UID, gid=BUILD_UID
    )
    kept = ctx.msi_contents[artifact.name]
    contents = checks.check_msi(ctx, artifact, output)  # the signed MSI, as users install it
    contents.pop("upgrade_code", None)
    ctx.msi_contents[artifact.name] = {
        **contents,
        "product_code": kept["product_code"],
        "package_code": kept["package_code"],
        "upgrade_code": kept["upgrade_code"],
    }


def _sign(signer: AuthenticodeSigner, source: Path, signed: Path, when: int, name: str) -> None:
    """A failure after the key's trial signature (a token pulled out, a time-stamping server
    gone) said as the file it stopped at."""
    try:
        signer.sign(source, signed, when)
    except AuthenticodeFailure as exc:
        raise SigningKeyError(
            f"Authenticode: signing {name} failed: {exc}", hint=SIGNING_HINT
        ) from None


def _take_out(ctx: RunContext, artifact: ArtifactPlan, path: Path) -> None:
    landing = path.with_name(f".{artifact.name}.landing")
    archives.safe_extract(
        ctx.container.get_archive(f"{ctx.layout.artifacts}/{artifact.name}"),
        landing,
        what=f"{artifact.name} made from signed files",
        limits=archives.Limits(max_bytes=ctx.plan.max_artifact_bytes, max_members=1),
    )
    (landing / artifact.name).replace(path)
    shutil.rmtree(landing)


def _record(
    ctx: RunContext,
    signer: AuthenticodeSigner,
    before: dict[str, str],
    unsigned_files: dict[str, dict[str, str]],
) -> None:
    files: dict[str, dict[str, Any]] = {}
    updated = []
    for known in ctx.artifacts:
        if known.kind in ("pe", "msi"):
            path = ctx.staging / known.name
            digest = sha256_file(path)
            files[known.name] = {"sha256": digest, "unsigned_sha256": before[known.name]}
            if known.kind == "msi":  # and what it holds, before its files were signed
                files[known.name]["unsigned_files"] = unsigned_files[known.name]
            known = dataclasses.replace(known, sha256=digest, size=path.stat().st_size)
        updated.append(known)
    ctx.artifacts = updated
    ctx.authenticode = {**signer.record(), "files": files}


def _files_of(msi: Path) -> dict[str, bytes]:
    try:
        return cabinet.msi_files(msi)
    except cabinet.CabinetError as exc:
        raise ArtifactError(f"{msi.name}: its files cannot be read ({exc})") from None


def _is_pe(data: bytes) -> bool:
    if data[:2] != b"MZ":
        return False
    try:
        parse_pe(data)
    except PeFormatError:
        return False
    return True
