"""Secrets never leave in clear: credentials in URLs (`user:pass@`), values of build args whose
names say they are secret (TOKEN, PASSWORD, ...) and proxies are replaced by `***` in logs,
step logs, error messages, the manifest and provenance.

Known secret values are registered once (from the plan) and scrubbed wherever they appear;
credentials in URLs are scrubbed by shape, registered or not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MASK = "***"
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")
SECRET_NAME = re.compile(
    r"(TOKEN|PASSWORD|PASSWD|SECRET|CREDENTIAL|AUTH|PRIVATE|API_?KEY|ACCESS_?KEY|PROXY)",
    re.IGNORECASE,
)
_known: set[str] = set()


def register(value: str) -> None:
    """Scrub this value from everything written from now on (values under 4 characters would
    scrub ordinary text, and are not secret enough to matter)."""
    if len(value) >= 4:
        _known.add(value)


def register_build_args(args: Mapping[str, str]) -> None:
    for name, value in args.items():
        if SECRET_NAME.search(name):
            register(value)
        for match in _URL_CREDENTIALS.finditer(value):
            register(match["userinfo"])


def text(value: str) -> str:
    """The text with URL credentials and every registered secret masked."""
    value = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{MASK}@", value)
    for secret in sorted(_known, key=len, reverse=True):
        value = value.replace(secret, MASK)
    return value


def build_args(args: Mapping[str, str]) -> dict[str, str]:
    """Build args for a record: secret-named ones masked whole, URL credentials masked."""
    return {name: MASK if SECRET_NAME.search(name) else text(value) for name, value in args.items()}


def deep(value: Any) -> Any:
    """Every string in a JSON-able structure, masked."""
    if isinstance(value, str):
        return text(value)
    if isinstance(value, dict):
        return {key: deep(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [deep(item) for item in value]
    return value
