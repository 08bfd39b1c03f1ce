"""Build benchmarks: each a ratio of two things measured in the same run on this machine.

1. builder-vs-hand (warm images, and with a cold build image): `qga-builder run` (artifact and
   compiler caches off, VM test off) against bench/hand_build.sh doing the same work with the
   docker CLI. Goal <= 1.03.
2. noop-rerun: the same command again with nothing changed (served by the artifact cache), wall
   seconds of the whole command. Goal <= 2 s.
3. patch-edit: configure + compile after a patch edit (compiler cache and configured tree warm)
   as a share of a cold configure + compile (cache volume empty). Goal <= 35 %.
4. matrix: two recipes with `--jobs 2` against the two run one after the other, and the same
   two over two engines (QGA_BENCH_SECOND_ENGINE, or the second dockerd tests/second_engine.py
   starts). Goal <= 0.7. Measured with every cache off (cold compiles) and with the compiler
   cache and configured trees warm (rebuilds). Each row also gives its floor: the CPU time the
   machine spent on the sequential runs, spread over every core, as a share of their wall
   time. Two builds at once cannot finish sooner than their CPU work allows, so no scheduler
   gets below the floor on this machine. A third condition caps each build at one CPU
   (`build.cpus: 1`): a model of a machine with more cores than one build keeps busy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
PACKAGE_KINDS = ("deb", "rpm", "tarball")  # made by the package stage, after the build
PY = sys.executable


# The commands that read recipes: only they take --allow-outside-project (recipes in a
# scratch directory use the project's Dockerfiles and patches).
RECIPE_COMMANDS = frozenset({"run", "verify", "validate", "plan", "lock"})


def _outside(command: str) -> list[str]:
    return ["--allow-outside-project"] if command in RECIPE_COMMANDS else []


def cli(*args: str, env: dict[str, str] | None = None) -> float:
    """Run the builder; its wall time in seconds (it must succeed)."""
    start = time.perf_counter()
    result = subprocess.run(
        [PY, "-m", "builder", *args, *_outside(args[0])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"builder {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return elapsed


def variant(work: Path, source: str, name: str, cpus: float | None = None, **changes: Any) -> Path:
    """A copy of a recipe with absolute paths, VM test off, no packages (the hand script makes
    none, and the benchmarks measure the build), and `changes` applied."""
    data = yaml.safe_load((RECIPES / source).read_text())
    data["artifacts"] = [a for a in data["artifacts"] if a.get("kind") not in PACKAGE_KINDS]
    data["environment"]["dockerfile"] = str((RECIPES / data["environment"]["dockerfile"]).resolve())
    for patch in data.get("patches", []):
        patch["path"] = str((RECIPES / patch["path"]).resolve())
    data.update(name=name, vm_test=False, **changes)
    if cpus is not None:
        data.setdefault("build", {})["cpus"] = cpus
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def busy_cpu_seconds() -> float:
    """CPU time this machine has spent working since boot, over all cores (/proc/stat: user,
    nice, system, irq, softirq; idle, iowait and time stolen by a hypervisor left out)."""
    user, nice, system, _idle, _iowait, irq, softirq = Path("/proc/stat").read_text().split()[1:8]
    ticks = sum(int(x) for x in (user, nice, system, irq, softirq))
    return ticks / os.sysconf("SC_CLK_TCK")


def with_cpu(work: Any) -> tuple[float, float]:
    """(wall seconds `work()` returns, CPU seconds the machine spent meanwhile)."""
    before = busy_cpu_seconds()
    wall = work()
    return wall, busy_cpu_seconds() - before


def manifest(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "manifest.json").read_text())


def remove_image(image_id: str) -> None:
    subprocess.run(["docker", "rmi", "-f", image_id], capture_output=True)


HAND_COLD_IMAGE = "qga-bench/hand:cold"


def forget_build_images(builder_image: str) -> None:
    """Before a cold-image build: neither side's image may serve the other as layer cache (the
    same Dockerfile, base and packages give the same cache keys). Removing a tagged image also
    removes its untagged intermediate layers; the engine's other images are never pruned."""
    remove_image(builder_image)
    remove_image(HAND_COLD_IMAGE)


def remove_volume(name: str) -> None:
    subprocess.run(["docker", "volume", "rm", "-f", name], capture_output=True)


def hand(out: Path, built: dict[str, Any], cold_image: bool) -> float:
    """bench/hand_build.sh with what the builder's manifest says it used."""
    env = built["environment"]
    flags = built["build"]["configure"].split()[1:]
    flags = [f for f in flags if not f.startswith(("--extra-cflags", "--extra-cxxflags", "-ffile"))]
    flags_file = out.parent / f"{out.name}.flags"
    flags_file.write_text("\n".join(flags) + "\n")
    image = env["image"]["tag"] if not cold_image else HAND_COLD_IMAGE
    extra: dict[str, str] = {}
    if cold_image:
        forget_build_images(env["image"]["tag"])
        extra = {
            "BUILD_DOCKERFILE": env["image"]["dockerfile"],
            "BASE_IMAGE": env["base"]["image_id"],
            "PACKAGES": dict(env["image"]["build_args"])["PACKAGES"],
        }
    patches = [p["path"] for p in built["patches"]]
    tarball = source_tarball(built)
    start = time.perf_counter()
    subprocess.run(
        [str(ROOT / "bench" / "hand_build.sh"), str(out), str(tarball), str(flags_file),
         image, *patches],
        check=True,
        env={**os.environ, **extra},
    )  # fmt: skip
    return time.perf_counter() - start


def source_tarball(built: dict[str, Any]) -> Path:
    """The Debian orig tarball the builder fetched (in its cache), by the manifest's name."""
    sys.path.insert(0, str(ROOT))
    from builder.host.cache import Cache

    return Cache.default().sources / "debian" / built["source"]["file"]


def best(samples: list[float]) -> float:
    return min(samples)


def bench_builder_vs_hand(work: Path) -> dict[str, Any]:
    recipe = variant(work, "linux-static-qemu-10.0.yaml", "bench-10.0")
    common = ("run", str(recipe), "--no-cache", "--no-ccache", "--output")
    cli(*common, str(work / "warmup"))  # images made, source fetched
    built = manifest(work / "warmup")
    results: dict[str, Any] = {}
    for condition in ("warm", "cold-build-image"):
        ours, theirs = [], []
        for attempt in range(2):  # best of two each, interleaved
            if condition != "warm":  # by tag: each cold build makes a new image id
                forget_build_images(built["environment"]["image"]["tag"])
            ours.append(cli(*common, str(work / f"ours-{condition}-{attempt}")))
            theirs.append(hand(work / f"hand-{condition}-{attempt}", built, condition != "warm"))
        results[condition] = {
            "baseline_s": best(theirs),
            "measured_s": best(ours),
            "ratio": best(ours) / best(theirs),
            "goal": "<= 1.03",
            "stages": manifest(work / f"ours-{condition}-{ours.index(best(ours))}")[
                "timings_seconds"
            ],
        }
    same = (work / "ours-warm-0" / "SHA256SUMS").read_text().split()[0]
    results["same_binary_as_hand"] = (
        same == (work / "hand-warm-0" / "SHA256SUMS").read_text().split()[0]
    )
    return results


def bench_noop(work: Path) -> dict[str, Any]:
    recipe = variant(work, "linux-static-qemu-10.0.yaml", "bench-noop")
    out = work / "noop"
    first = cli("run", str(recipe), "--output", str(out))
    again = [cli("run", str(recipe), "--output", str(out)) for _ in range(3)]
    assert manifest(out)["cache"]["hit"] is True
    return {"baseline_s": first, "measured_s": best(again), "ratio": best(again) / first,
            "goal": "measured <= 2 s"}  # fmt: skip


def _configure_compile(directory: Path) -> float:
    timings = manifest(directory)["timings_seconds"]
    return float(timings["configure"] + timings["compile"])


def bench_patch_edit(work: Path) -> dict[str, Any]:
    edit = work / "0099-bench-edit.patch"
    recipe = variant(work, "linux-static-qemu-10.0.yaml", "bench-edit")
    cli("run", str(recipe), "--no-cache", "--output", str(work / "edit-warmup"))
    volume = "qga-ccache-" + manifest(work / "edit-warmup")["environment"]["image"]["id"][7:23]
    remove_volume(volume)  # cold: the compiler cache starts empty
    cli("run", str(recipe), "--no-cache", "--output", str(work / "edit-cold"))
    data = yaml.safe_load(recipe.read_text())
    head = subprocess.run(
        ["tar", "-xOf", str(source_tarball(manifest(work / "edit-cold"))), "--wildcards",
         "*/qga/main.c"], capture_output=True, check=True
    ).stdout.decode().splitlines()[:3]  # fmt: skip
    edit.write_text(
        "--- a/qga/main.c\n+++ b/qga/main.c\n@@ -1,3 +1,4 @@\n"
        "+/* edited for the benchmark */\n" + "".join(f" {line}\n" for line in head)
    )
    data["patches"].append(
        {"path": str(edit), "sha256": hashlib.sha256(edit.read_bytes()).hexdigest()}
    )
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    cli("run", str(recipe), "--output", str(work / "edit-after"))
    cold, after = _configure_compile(work / "edit-cold"), _configure_compile(work / "edit-after")
    return {
        "baseline_s": cold,
        "measured_s": after,
        "ratio": after / cold,
        "goal": "<= 0.35",
        "configure_s": manifest(work / "edit-after")["timings_seconds"]["configure"],
        "cold_configure_s": manifest(work / "edit-cold")["timings_seconds"]["configure"],
        "configured_tree": manifest(work / "edit-after")["build"]["configured_tree"],
        "ccache": manifest(work / "edit-after")["build"]["ccache"],
    }


def bench_matrix(work: Path, engines: list[str]) -> dict[str, Any]:
    """Two recipes one after the other, then together, then over two engines: first with every
    cache off (each compile from scratch), then with the compiler cache and configured trees
    warm (a rebuild, as in CI after a patch edit; the artifact cache stays off in both), then
    cold again with each build capped at one CPU."""
    a = variant(work, "linux-static-qemu-10.0.yaml", "bench-m-10.0")
    b = variant(work, "linux-static-qemu-7.2.yaml", "bench-m-7.2")
    results: dict[str, Any] = {}
    for condition, flags in (
        ("cold compile", ("--no-cache", "--no-ccache")),
        ("warm compiler caches", ("--no-cache",)),
    ):
        for recipe in (a, b):  # images (and, warm, the caches) on every engine, untimed
            for engine in engines:
                out = work / "m-warm"
                cli("run", str(recipe), *flags, "--output", str(out), "--engine", engine)
        results |= _matrix_rows(work, condition, flags, engines, (a, b))
    capped = (  # the images are the ones above: the CPU limit is not an image input
        variant(work, "linux-static-qemu-10.0.yaml", "bench-m1-10.0", cpus=1),
        variant(work, "linux-static-qemu-7.2.yaml", "bench-m1-7.2", cpus=1),
    )
    flags = ("--no-cache", "--no-ccache")
    return results | _matrix_rows(work, "cold compile, 1 CPU per build", flags, engines, capped)


def _matrix_rows(
    work: Path,
    condition: str,
    flags: tuple[str, ...],
    engines: list[str],
    recipes: tuple[Path, Path],
) -> dict[str, Any]:
    tag = condition.replace(" ", "-").replace(",", "")
    one = engines[0]
    cores = os.cpu_count() or 1
    runs = [
        with_cpu(lambda r=r: cli("run", str(r), *flags, "--output",
                                 str(work / f"seq-{tag}-{r.stem}"), "--engine", one))
        for r in recipes
    ]  # fmt: skip
    sequential, sequential_cpu = sum(w for w, _ in runs), sum(c for _, c in runs)
    floor = sequential_cpu / cores / sequential

    def row(wall: float, cpu: float) -> dict[str, Any]:
        return {
            "baseline_s": sequential,
            "measured_s": wall,
            "ratio": wall / sequential,
            "goal": "<= 0.7",
            "floor": floor,
            "cores": cores,
            "baseline_cpu_s": sequential_cpu,
            "measured_cpu_s": cpu,
        }

    names = [str(r) for r in recipes]
    rows = {
        f"jobs2, {condition}": row(*with_cpu(lambda: cli(
            "run", *names, *flags, "--jobs", "2", "--output-root", str(work / f"par-{tag}"),
            "--engine", one)))
    }  # fmt: skip
    if len(engines) > 1:
        every = [x for engine in engines for x in ("--engine", engine)]
        rows[f"engines2, {condition}"] = row(*with_cpu(lambda: cli(
            "run", *names, *flags, "--jobs", "2", "--output-root", str(work / f"spread-{tag}"),
            *every)))  # fmt: skip
    return rows


def bench_vm_test(work: Path) -> dict[str, Any]:
    """`vm-test` warm (guest images and disks cached; its upgrade packages are made each time)
    against the fast check of the bare agent in a busybox initramfs (baseline): what booting
    what users boot costs. Rows: every scenario, and the one the run's stage boots."""
    out = work / "vm"
    cli("run", str(RECIPES / "linux-static.yaml"), "--output", str(out))  # warms the guest
    cli("vm-test", str(out), "--scenarios", "sysvinit")  # warms the sysvinit guest, untimed
    fast = best([cli("vm-test", "--fast", str(out)) for _ in range(2)])
    stage = cli("vm-test", str(out), "--scenarios", "systemd")
    full = cli("vm-test", str(out))
    report = manifest(out)["vm_test"]
    boots = {s["name"]: s["boot_to_answer_seconds"] for s in report["scenarios"]}
    goal = "measured <= 60 s; boot-to-answer <= 20 s"
    return {
        "every-scenario": {"baseline_s": fast, "measured_s": full, "ratio": full / fast,
                           "goal": goal, "boot_to_answer_s": boots},
        "systemd-scenario": {"baseline_s": fast, "measured_s": stage, "ratio": stage / fast,
                             "goal": goal},
    }  # fmt: skip


def bench_vm_test_arm64(work: Path) -> dict[str, Any]:
    """The arm64 guest (qemu-system-aarch64, TCG) against the x86-64 one (baseline), both warm:
    the systemd scenario with its reboot, and the arm64 agent's boot-to-answer after the
    power-on (goal: <= 60 s on this machine)."""
    x86, arm = work / "vm-x86", work / "vm-arm64"
    cli("run", str(RECIPES / "linux-static.yaml"), "--output", str(x86))
    cli("run", str(RECIPES / "linux-static-arm64.yaml"), "--output", str(arm))
    for out in (x86, arm):  # warms both guests (the arm64 one's second stage), untimed
        cli("vm-test", str(out), "--scenarios", "no-port")
    baseline = cli("vm-test", str(x86), "--scenarios", "systemd")
    measured = cli("vm-test", str(arm), "--scenarios", "systemd")
    boots = {
        name: manifest(out)["vm_test"]["scenarios"][0]["boot_to_answer_seconds"]
        for name, out in (("x86_64", x86), ("aarch64", arm))
    }
    return {
        "systemd-scenario": {"baseline_s": baseline, "measured_s": measured,
                             "ratio": measured / baseline, "goal": "boot-to-answer <= 60 s",
                             "boot_to_answer_s": boots},
    }  # fmt: skip


BENCHMARKS = {
    "builder-vs-hand": bench_builder_vs_hand,
    "noop-rerun": bench_noop,
    "patch-edit": bench_patch_edit,
    "vm-test": bench_vm_test,
    "vm-test-arm64": bench_vm_test_arm64,
}


def run_all(engines: list[str], only: str = "") -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="qga-bench-"))
    try:
        if only:  # QGA_BENCH_ONLY: one benchmark, merged into the results already there
            return {only: BENCHMARKS[only](work)}
        results = {name: bench(work) for name, bench in BENCHMARKS.items()}
        return results | {"matrix": bench_matrix(work, engines)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
