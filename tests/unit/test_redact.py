"""Credentials are masked by shape (URLs) and by registration (secret build args)."""

from __future__ import annotations

from builder.formats import redact


def test_url_credentials_are_masked() -> None:
    assert redact.text("git clone https://me:pa55@git.lab/qemu.git") == (
        "git clone https://***@git.lab/qemu.git"
    )
    assert redact.text("https://token@git.lab/x and http://a:b@c/") == (
        "https://***@git.lab/x and http://***@c/"
    )
    assert redact.text("mail me@example.org, see https://git.lab/x") == (
        "mail me@example.org, see https://git.lab/x"
    )


def test_secret_build_args_are_masked_wherever_they_appear() -> None:
    redact.register_build_args({"GITLAB_TOKEN": "glpat-abcdef", "JOBS": "2"})
    assert redact.build_args({"GITLAB_TOKEN": "glpat-abcdef", "JOBS": "2"}) == {
        "GITLAB_TOKEN": "***",
        "JOBS": "2",
    }
    assert redact.text("curl -H 'PRIVATE-TOKEN: glpat-abcdef'") == "curl -H 'PRIVATE-TOKEN: ***'"
    assert redact.deep({"a": ["x glpat-abcdef y"], "n": 2}) == {"a": ["x *** y"], "n": 2}
