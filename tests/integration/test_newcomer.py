"""The README's newcomer path on this Debian 12 host, played as a newcomer by tests/newcomer.py:
the root set-up step, then as a user in the `docker` group with no virtualenv active, on the
system's python3: the card's command as typed, `make lint`, a base image made without root,
and `make build` with its release checked as a user checks it.

The session plays it beside the tests that follow the first builds (conftest's `beside`: its
steps are mostly downloads, single-threaded work and a one-vCPU guest), so this test usually
only reads the result."""

from __future__ import annotations

from tests.integration.conftest import beside_result
from tests.newcomer import play


def test_the_newcomer_path_as_a_docker_group_user(engine) -> None:
    beside_result("newcomer", lambda: play(engine))
