"""Stage `msi`: make each checked MSI reproducible (wixl writes random codes and the time).

The ProductCode and PackageCode become UUIDv5s of the recipe, version and inputs; summary,
cabinet and storage times become SOURCE_DATE_EPOCH (see `formats.msi_rewrite`). The file's
digest changes here, so the artifact record is replaced with the published digest.
"""

from __future__ import annotations

import dataclasses

from builder.formats import msi_rewrite
from builder.formats.checksums import sha256_file
from builder.log import StepOutput
from builder.run_context import RunContext


def make_reproducible(ctx: RunContext, output: StepOutput) -> None:
    for artifact in ctx.artifact_plans:
        if artifact.kind != "msi":
            continue
        path = ctx.staging / artifact.name
        codes = msi_rewrite.derive_codes(ctx.plan.recipe_name, ctx.qemu_version, ctx.run_key)
        msi_rewrite.make_reproducible(
            path, codes, ctx.built_product_codes[artifact.name], ctx.source_date_epoch
        )
        contents = ctx.msi_contents[artifact.name]
        upgrade = contents.pop("upgrade_code")
        contents.update(product_code=codes.product, package_code=codes.package)
        contents["upgrade_code"] = upgrade
        output.line(
            f"{artifact.name}: ProductCode {codes.product}, PackageCode {codes.package}, "
            f"times {ctx.source_date_epoch} (UpgradeCode {upgrade} kept)"
        )
        digest, size = sha256_file(path), path.stat().st_size
        ctx.artifacts = [
            dataclasses.replace(known, sha256=digest, size=size)
            if known.name == artifact.name
            else known
            for known in ctx.artifacts
        ]
