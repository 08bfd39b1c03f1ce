"""Benchmarks: each measures a ratio against a baseline in one run (never absolute times).

    .venv/bin/python bench/run.py            # or: make bench

1. source-check: preparing the default recipe's QEMU tarball when its member-by-member safety
   check is already cached under its sha256, against checking it again (baseline).
2. agent-reply: reading a 22 MB guest-exec-status reply (16 MiB of output, base64) with the
   client's "decode only once a reply can be complete" reader, against decoding the buffer after
   every chunk (baseline, what the first version did).
3. the build benchmarks of bench/builds.py (builder against a hand-written docker-CLI script,
   a no-op rerun, a patch-edit rebuild, a matrix with --jobs 2 and over two engines).
Results go to bench/results/ (results.json, results.md, stages.png).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from builder.agent.client import AgentClient
from builder.commands.common import load_plan
from builder.config.overrides import Overrides
from builder.host.cache import Cache
from builder.stages.source import checked_marker, prepare_source

ROOT = Path(__file__).resolve().parent.parent


def timed(function, repeat: int = 3) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def bench_source_check() -> dict[str, float]:
    plan, _ = load_plan(ROOT / "recipes" / "linux-static.yaml", Overrides())
    cache = Cache.default()
    prepare_source(plan.source, cache, lambda _: None)  # fetch once, outside the timing
    marker = checked_marker(cache, plan.source.sha256)

    def uncached() -> None:
        marker.unlink(missing_ok=True)
        prepare_source(plan.source, cache, lambda _: None)

    baseline = timed(uncached, repeat=2)
    cached = timed(lambda: prepare_source(plan.source, cache, lambda _: None))
    return {"baseline_s": baseline, "measured_s": cached, "speedup": baseline / cached}


def _reply() -> bytes:
    data = base64.b64encode(b"\0" * (16 * 1024 * 1024)).decode()
    return json.dumps({"return": {"exited": True, "exitcode": 0, "out-data": data}}).encode()


def _serve(reply: bytes, sock: socket.socket) -> None:
    view = memoryview(reply)
    for at in range(0, len(reply), 65536):
        sock.sendall(view[at : at + 65536])


def _naive_read(fd: int, size_hint: int) -> dict:
    buffer = b""
    decoder = json.JSONDecoder()
    while True:
        buffer += os.read(fd, 65536)
        try:
            value, _ = decoder.raw_decode(buffer.decode())
            return value
        except json.JSONDecodeError:
            continue


def bench_agent_reply() -> dict[str, float]:
    reply = _reply()

    def run(reader) -> None:
        ours, theirs = socket.socketpair()
        writer = threading.Thread(target=_serve, args=(reply, theirs))
        writer.start()
        value = reader(ours)
        writer.join()
        ours.close()
        theirs.close()
        assert value["return"]["exitcode"] == 0

    baseline = timed(lambda: run(lambda s: _naive_read(s.fileno(), len(reply))), repeat=1)
    measured = timed(
        lambda: run(lambda s: AgentClient(s.fileno())._next_message(time.monotonic() + 60))
    )
    return {"baseline_s": baseline, "measured_s": measured, "speedup": baseline / measured}


def main() -> int:
    import platform

    from bench import builds, report

    only = os.environ.get("QGA_BENCH_ONLY", "")
    if only:  # one build benchmark, merged into the last results
        results = json.loads((report.RESULTS / "results.json").read_text())
        results |= builds.run_all([], only=only)
        report.write(results, f"{platform.machine()}, {os.cpu_count()} cores")
        print((report.RESULTS / "results.md").read_text())
        return 0
    results: dict = {}
    for name, micro in (("source-check", bench_source_check), ("agent-reply", bench_agent_reply)):
        value = micro()
        results[name] = {**value, "ratio": value["measured_s"] / value["baseline_s"]}
    engines = ["unix:///var/run/docker.sock"]
    if not os.environ.get("QGA_BENCH_MICRO_ONLY"):
        if os.environ.get("QGA_BENCH_SECOND_ENGINE"):
            results |= builds.run_all([*engines, os.environ["QGA_BENCH_SECOND_ENGINE"]])
        else:  # a second dockerd on this machine, as the tests start one (removed after)
            from tests.second_engine import SecondEngine

            with SecondEngine() as second:
                results |= builds.run_all([*engines, second.unix_url])
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    report.write(results, machine)
    print((report.RESULTS / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
