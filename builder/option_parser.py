"""argparse as the command line needs it: "did you mean" for a misspelt command, choice or
option; global options accepted at every parser level (before the command, after it, after a
sub-command) and resolved once; number types that refuse what makes no sense."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from builder.config.suggest import close_match

Handler = Callable[[argparse.Namespace], int]
Subcommands = Any  # argparse's _SubParsersAction, private in typeshed


def lazy_handler(module: str, name: str) -> Handler:
    """A command's handler, imported when it runs (so `--help` stays fast)."""

    def handle(args: argparse.Namespace) -> int:
        imported = importlib.import_module(f"builder.commands.{module}")
        return int(getattr(imported, name)(args))

    return handle


class Parser(argparse.ArgumentParser):
    """argparse, and a "did you mean" for a misspelt command, choice or option (`valdate`,
    `--no-cahce`); an option the command does not take is refused by the command's parser,
    which can list the ones it does take."""

    def _check_value(self, action: argparse.Action, value: object) -> None:
        try:
            super()._check_value(action, value)
        except argparse.ArgumentError:
            guess = close_match(str(value), [str(c) for c in action.choices or ()])
            if guess is None:
                raise
            choices = ", ".join(repr(str(c)) for c in action.choices or ())
            message = f"invalid choice: {value!r}; did you mean {guess!r}? (choose from {choices})"
            raise argparse.ArgumentError(action, message) from None

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        unknown = [extra for extra in extras if extra.startswith("-")]
        if unknown and not self._subparsers:  # a command's own parser knows all its options
            self.error(self._no_such_option(unknown[0].split("=", 1)[0]))
        return parsed, extras

    def _no_such_option(self, option: str) -> str:
        known = sorted(
            option
            for option, action in self._option_string_actions.items()
            if option.startswith("--") and action.help != argparse.SUPPRESS
        )
        guess = close_match(option, known)
        if guess is not None:
            return f"no option {option}; did you mean {guess}?"
        return f"no option {option} here; this command takes: {', '.join(known)}"


def add_signing_options(parser: argparse.ArgumentParser, what: str) -> None:
    """`--signing-key FILE` or `--signing-key-id ID`, and `--signing-passphrase-file FILE`
    (`run`, `release`); the passphrase is never an option's value."""
    group = parser.add_argument_group(
        "signing (an OpenPGP signature of SHA256SUMS, made on this host: SHA256SUMS.asc)"
    )
    keys = group.add_mutually_exclusive_group()
    keys.add_argument(
        "--signing-key",
        type=Path,
        metavar="FILE",
        help=f"sign {what} with this ASCII-armored OpenPGP secret key (version 4; imported "
        "into a private temporary GnuPG home, never yours); checked before anything is built",
    )
    keys.add_argument(
        "--signing-key-id",
        metavar="ID",
        help=f"sign {what} with this key (fingerprint) of your GnuPG home (GNUPGHOME, else "
        "~/.gnupg) and agent",
    )
    group.add_argument(
        "--signing-passphrase-file",
        type=Path,
        metavar="FILE",
        help="the key's passphrase: FILE holds it alone (default: the environment "
        "variable QGA_SIGNING_PASSPHRASE; else none, or your gpg agent's for --signing-key-id)",
    )
    group.add_argument(
        "--attestation-key",
        type=Path,
        metavar="FILE",
        help="also sign the provenance into provenance.intoto.jsonl (DSSE envelopes, as "
        "`cosign verify-blob-attestation` checks them) with this ECDSA P-256 or Ed25519 "
        "private key in PEM (passphrase, if encrypted: QGA_ATTESTATION_PASSPHRASE)",
    )


def add_authenticode_options(parser: argparse.ArgumentParser) -> None:
    """The Windows files' Authenticode key (`run`): a PKCS#12 file or a PKCS#11 token."""
    group = parser.add_argument_group(
        "Authenticode (Windows: the executables, DLLs and the MSI signed on this host with "
        "osslsigncode)"
    )
    keys = group.add_mutually_exclusive_group()
    keys.add_argument(
        "--authenticode-pfx",
        type=Path,
        metavar="FILE",
        help="sign with the key and certificate of this PKCS#12 file (password: the "
        "environment variable QGA_AUTHENTICODE_PASSWORD or --authenticode-password-file)",
    )
    keys.add_argument(
        "--authenticode-pkcs11-module",
        type=Path,
        metavar="FILE",
        help="sign with a key in a PKCS#11 token through this module (a hardware token's, or "
        "softhsm2's); needs --authenticode-key-uri and --authenticode-cert",
    )
    group.add_argument(
        "--authenticode-key-uri",
        metavar="URI",
        help="the token's key, as a PKCS#11 URI (pkcs11:token=...;object=...), without its PIN",
    )
    group.add_argument(
        "--authenticode-cert",
        type=Path,
        metavar="FILE",
        help="the token key's certificate, and its chain, in PEM",
    )
    group.add_argument(
        "--authenticode-password-file",
        type=Path,
        metavar="FILE",
        help="the PKCS#12 password or the token's PIN: FILE holds it alone",
    )
    stamps = group.add_mutually_exclusive_group()
    stamps.add_argument(
        "--authenticode-timestamp-url",
        metavar="URL",
        help="time-stamp each signature at this RFC 3161 server (signatures then outlive the "
        "certificate)",
    )
    stamps.add_argument(
        "--authenticode-tsa-cert",
        type=Path,
        metavar="FILE",
        help="time-stamp with an offline authority of your own: its certificate chain (PEM); "
        "with --authenticode-tsa-key",
    )
    group.add_argument(
        "--authenticode-tsa-key",
        type=Path,
        metavar="FILE",
        help="the offline time-stamping authority's key (PEM)",
    )


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least `minimum` (`clean --keep -1` is refused)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, not {value}")
        return value

    return parse


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, not {text}")
    return value


class GlobalOptions:
    """What `--log-format` and `-v` said, wherever they stood: before the command, after it,
    or after a sub-command (`base debootstrap`). Each parser level parses into a namespace of
    its own, so the options write here instead; the later one wins and `-v`s add up."""

    def __init__(self) -> None:
        self.log_format = "console"
        self.verbose = 0


class GlobalOptionAction(argparse.Action):
    def __init__(self, *args: object, seen: GlobalOptions, **kwargs: object) -> None:
        self.seen = seen
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        if self.dest == "verbose":
            self.seen.verbose += 1
        else:
            self.seen.log_format = str(values)


class TopParser(Parser):
    """The command line's parser: global options anywhere, resolved into `args.log_format`
    and `args.verbose` (a count)."""

    def __init__(self, seen: GlobalOptions, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.seen = seen

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        self.seen.__init__()  # type: ignore[misc]  # a parser may parse twice (tests)
        parsed = super().parse_args(args, namespace)
        parsed.log_format, parsed.verbose = self.seen.log_format, self.seen.verbose
        return parsed
