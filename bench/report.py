"""bench/results/: results.json, results.md (a table of every ratio with its baseline) and
stages.png (the builder's per-stage times against the hand script's total)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def rows(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name, value in results.items():
        if isinstance(value, dict) and "ratio" in value:
            found.append((name, value))
        elif isinstance(value, dict):
            found += [(f"{name} / {k}", v) for k, v in rows(value)]
    return found


def write(results: dict[str, Any], machine: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Benchmarks",
        "",
        f"Measured in one run of `make bench` on {machine}. Each ratio is measured / baseline.",
        "",
        "| benchmark | baseline | measured | ratio | goal |",
        "|---|---|---|---|---|",
    ]
    for name, value in rows(results):
        lines.append(
            f"| {name} | {value['baseline_s']:.2f} s | {value['measured_s']:.2f} s "
            f"| {value['ratio']:.3f} | {value.get('goal', '')} |"
        )
    lines += floors(results)
    (RESULTS / "results.md").write_text("\n".join(lines) + "\n")
    chart(results)


def floors(results: dict[str, Any]) -> list[str]:
    """The matrix rows' floors: what running builds at once can gain on this machine at all."""
    found = [(name, value) for name, value in rows(results) if "floor" in value]
    if not found:
        return []
    lines = [
        "",
        "## The matrix rows against what this machine allows",
        "",
        "CPU is the time the machine spent working (all cores) while the runs went on. The floor",
        "is the sequential runs' CPU time spread over every core, as a share of their wall time:",
        "two builds at once cannot finish sooner than their CPU work allows, so no ratio on",
        "this machine can be below it. A build that already keeps every core busy has a floor",
        "near 1; the 1-CPU rows model a machine with more cores than one build uses.",
        "",
        "| benchmark | cores | CPU, one after the other | CPU, together | floor | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for name, value in found:
        lines.append(
            f"| {name} | {value['cores']} | {value['baseline_cpu_s']:.1f} s "
            f"| {value['measured_cpu_s']:.1f} s | {value['floor']:.3f} | {value['ratio']:.3f} |"
        )
    return lines


def chart(results: dict[str, Any]) -> None:
    versus = results.get("builder-vs-hand")
    if not versus:
        return
    try:
        import matplotlib
    except ImportError:  # `make bench` installs it; bench/run.py run by hand may lack it
        print("stages.png not drawn: matplotlib is not installed (make bench installs it)")
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 3.6))
    conditions = [c for c in ("warm", "cold-build-image") if c in versus]
    for row, condition in enumerate(conditions):
        left = 0.0
        for stage, seconds in versus[condition]["stages"].items():
            axis.barh(f"builder ({condition})", seconds, left=left)
            if seconds > 2:
                axis.text(left + seconds / 2, row * 2, stage, ha="center", va="center", fontsize=7)
            left += seconds
        axis.barh(f"hand script ({condition})", versus[condition]["baseline_s"], color="grey")
    axis.set_xlabel("seconds")
    axis.set_title("Where a build's time goes: builder stages vs the hand-written script")
    figure.tight_layout()
    figure.savefig(RESULTS / "stages.png", dpi=120)
