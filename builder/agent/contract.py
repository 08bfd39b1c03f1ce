"""The patched agent's contract, as scenarios any client can run: `vm-test` runs them in a VM
over virtio-serial, the tests run the same ones against an agent on a unix socket.

Each scenario takes a connected `AgentClient`, returns a line saying what it saw, and raises
`AssertionError` (or `AgentError`) when the agent breaks the contract. Partial output is proven
with a handshake, not sleeps: the command prints, marks that it did, then waits for a file
that the scenario creates (with another guest-exec) only after it has seen the output.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from builder.agent.client import AgentClient, AgentTimeout, ExecResult

STEP_DEADLINE = 30.0
BURSTS = 10
LINES_PER_BURST = 500
OUTPUT_CAP = 16 * 1024 * 1024  # the agent's buffer limit (GUEST_EXEC_MAX_OUTPUT)
SHELL = "/bin/sh"


def _wait(
    client: AgentClient, pid: int, result: ExecResult, done: Callable[[ExecResult], bool]
) -> None:
    end = time.monotonic() + STEP_DEADLINE
    while not done(result):
        if time.monotonic() > end:
            raise AgentTimeout(f"gave up after {STEP_DEADLINE:.0f} s; so far {result}")
        client.poll(pid, result)
        time.sleep(0.05)


def _exists(client: AgentClient, path: str) -> bool:
    return client.run(SHELL, ["-c", f"test -e {path}"], timeout=STEP_DEADLINE).exitcode == 0


def _wait_for_file(client: AgentClient, path: str, what: str) -> None:
    end = time.monotonic() + STEP_DEADLINE
    while not _exists(client, path):
        if time.monotonic() > end:
            raise AgentTimeout(what)


def _touch(client: AgentClient, path: str) -> None:
    client.run("/bin/touch", [path], timeout=STEP_DEADLINE)


def _gate() -> str:
    return f"/tmp/qga-contract-{uuid.uuid4().hex[:12]}"


def guest_info(client: AgentClient) -> str:
    info = client.execute("guest-info")
    names = {c["name"] for c in info["supported_commands"] if c.get("enabled", True)}
    missing = {"guest-exec", "guest-exec-status", "guest-sync-delimited"} - names
    if missing:
        raise AssertionError(f"missing commands: {sorted(missing)}")
    return f"version {info['version']}, {len(names)} commands"


def partial_output(client: AgentClient) -> str:
    """Output (stdout and stderr) arrives while the command still runs, and only once."""
    gate = _gate()
    script = (
        f"echo first; echo err-first >&2; touch {gate}.printed; "
        f"while [ ! -e {gate} ]; do sleep 0.05; done; "
        "echo second; echo err-second >&2; exit 7"
    )
    pid = client.exec(SHELL, ["-c", script])
    result = ExecResult()
    _wait_for_file(client, f"{gate}.printed", "the command never started")
    # The command has printed and now waits: poll until its output shows up (or give up).
    for _ in range(40):
        client.poll(pid, result)
        if result.stdout == b"first\n" and result.stderr == b"err-first\n":
            break
        time.sleep(0.05)
    early_out, early_err, exited_early = result.stdout, result.stderr, result.exited
    _touch(client, gate)
    _wait(client, pid, result, lambda r: r.exited)
    if exited_early:
        raise AssertionError("the command exited before it was released")
    if (early_out, early_err) != (b"first\n", b"err-first\n"):
        raise AssertionError(f"no output while running (got {early_out!r}, {early_err!r})")
    if result.stdout != b"first\nsecond\n" or result.stderr != b"err-first\nerr-second\n":
        raise AssertionError(f"output repeated or lost: {result.stdout!r} {result.stderr!r}")
    if result.exitcode != 7 or result.signal is not None:
        raise AssertionError(f"exit code {result.exitcode}, signal {result.signal}; expected 7")
    return f"{result.polls} polls; first lines while running; exit code 7"


def chunks_concatenate(client: AgentClient) -> str:
    """Output released in bursts spans many replies; their concatenation is the whole output."""
    gate = _gate()
    script = (
        f"i=0; while [ $i -lt {BURSTS} ]; do "
        f"seq $((i*{LINES_PER_BURST})) $((i*{LINES_PER_BURST}+{LINES_PER_BURST - 1})); "
        f"while [ ! -e {gate}.$i ]; do sleep 0.02; done; i=$((i+1)); done"
    )
    pid = client.exec(SHELL, ["-c", script])
    result = ExecResult()
    replies_with_data = 0
    false_truncation = 0
    for burst in range(BURSTS):
        end = time.monotonic() + STEP_DEADLINE
        while result.stdout.count(b"\n") < (burst + 1) * LINES_PER_BURST:
            if time.monotonic() > end or result.exited:
                raise AssertionError(f"burst {burst} did not arrive while running")
            reply = client.poll(pid, result)
            replies_with_data += "out-data" in reply
            # FIREWHEEL's driver takes the mere presence of the key for truncation.
            false_truncation += "out-truncated" in reply or "err-truncated" in reply
            time.sleep(0.02)
        _touch(client, f"{gate}.{burst}")
    _wait(client, pid, result, lambda r: r.exited)
    expected = "".join(f"{n}\n" for n in range(BURSTS * LINES_PER_BURST)).encode()
    if result.stdout != expected:
        raise AssertionError("the chunks do not concatenate to the whole output")
    if replies_with_data < BURSTS:
        raise AssertionError(f"only {replies_with_data} replies carried data")
    if false_truncation:
        raise AssertionError(f"{false_truncation} replies named truncation; nothing was cut")
    return f"{replies_with_data} replies carried data, {len(expected)} bytes in order"


def exit_codes(client: AgentClient) -> str:
    for code in (0, 3, 42):
        result = client.run(SHELL, ["-c", f"exit {code}"], timeout=STEP_DEADLINE)
        if result.exitcode != code:
            raise AssertionError(f"exit {code} reported as {result.exitcode}")
    return "0, 3, 42"


def signal_reported(client: AgentClient) -> str:
    result = client.run(SHELL, ["-c", "echo bye; kill -TERM $$"], timeout=STEP_DEADLINE)
    if result.signal != 15 or result.exitcode is not None:
        raise AssertionError(f"signal {result.signal}, exit code {result.exitcode}")
    if result.stdout != b"bye\n":
        raise AssertionError(f"output before the signal was {result.stdout!r}")
    return "SIGTERM reported as signal 15"


def truncation_reported(client: AgentClient) -> str:
    """More than 16 MiB before the first poll: truncation is reported, the agent answers on."""
    gate = _gate()
    script = (
        f"head -c {OUTPUT_CAP + 4 * 1024 * 1024} /dev/zero; touch {gate}.done; "
        f"while [ ! -e {gate} ]; do sleep 0.05; done"
    )
    pid = client.exec(SHELL, ["-c", script])
    _wait_for_file(client, f"{gate}.done", "the command did not finish printing")
    result = ExecResult()
    client.poll(pid, result)
    if not result.out_truncated:
        raise AssertionError("more than 16 MiB of output, but out-truncated was not reported")
    if len(result.stdout) != OUTPUT_CAP:
        raise AssertionError(f"{len(result.stdout)} bytes returned, expected {OUTPUT_CAP}")
    if not client.execute("guest-info", timeout=10)["version"]:
        raise AssertionError("the agent stopped answering")
    _touch(client, gate)
    _wait(client, pid, result, lambda r: r.exited)
    if result.exitcode != 0:
        raise AssertionError(f"exit code {result.exitcode}, expected 0")
    client.sync(timeout=10)
    return f"{OUTPUT_CAP} bytes kept, out-truncated set, the agent still answers"


SCENARIOS: tuple[Callable[[AgentClient], str], ...] = (
    guest_info,
    partial_output,
    chunks_concatenate,
    exit_codes,
    signal_reported,
    truncation_reported,
)
