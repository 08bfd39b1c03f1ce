"""Fatal errors of a run. Each class carries the process exit code it maps to.

Only `builder.cli` turns these into an exit: everything below it raises, nothing calls sys.exit.
Messages are written for the user: they say what is wrong, where, and what to do.
"""

from __future__ import annotations


class BuilderError(Exception):
    """A failure the user can act on; printed as one message without a traceback.

    Every error carries a hint: the raiser's own, or its class's `default_hint`.
    """

    exit_code = 1
    default_hint = "rerun with -v for debug messages"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint or self.default_hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class RecipeError(BuilderError):
    """The recipe file is missing, unreadable, not YAML, or does not validate."""

    exit_code = 2
    default_hint = (
        "`qga-builder schema` lists every field; `qga-builder validate RECIPE` checks a recipe"
    )


class UsageError(BuilderError):
    """A command-line option is wrong or conflicts with another."""

    exit_code = 2
    default_hint = "`qga-builder COMMAND --help` lists the options"


class InputError(BuilderError):
    """A pinned input (source, patch, base) is missing or its digest differs from the recipe."""

    exit_code = 3
    default_hint = "check the pin in the recipe against the file you have (README: Troubleshooting)"


class PatchError(BuilderError):
    """A patch of the series does not apply to the source."""

    exit_code = 4
    default_hint = "the patch must be made for this QEMU series (patches/qemu-X.Y/)"


class DockerUnavailableError(BuilderError):
    """The Docker daemon cannot be reached or went away."""

    exit_code = 5
    default_hint = (
        "start one with `make setup` (scripts/setup.sh), or point DOCKER_HOST at a running daemon"
    )


class ImageError(BuilderError):
    """The build image or its base could not be made."""

    exit_code = 6
    default_hint = "read the image build log under ~/.cache/qga-builder/runs/"


class StepError(BuilderError):
    """A step inside the build container exited non-zero."""

    exit_code = 7
    default_hint = "the full log of the step is under ~/.cache/qga-builder/runs/"


class ArtifactError(BuilderError):
    """A built artifact is missing or fails verification."""

    exit_code = 8
    default_hint = "the log of the check stage under ~/.cache/qga-builder/runs/ says what was found"


class OutputError(BuilderError):
    """The output directory cannot be written, or is locked by another run."""

    exit_code = 9
    default_hint = "choose another place with --output DIR"


class VerifyError(BuilderError):
    """Reproducibility or checksum verification found a difference."""

    exit_code = 10
    default_hint = "install diffoscope-minimal for a report of what differs"


class VmTestError(BuilderError):
    """The agent did not pass its test inside a virtual machine."""

    exit_code = 11
    default_hint = "read the log of the vm-test stage; `qga-builder vm-test DIR` reruns it alone"


class ContainerError(BuilderError):
    """Copying files into or out of a build container failed, or a command in it hung."""

    exit_code = 12
    default_hint = "`qga-builder clean` removes what the run left; rerun with -v for details"


class HostToolError(BuilderError):
    """A program the run needs on this host (debootstrap, git, wine, qemu-system) is missing."""

    exit_code = 13
    default_hint = "`make setup` (scripts/setup.sh) installs the host tools"


class UpdatePendingError(BuilderError):
    """`bump` found an update it does not apply itself (a lock behind its suite's packages)."""

    exit_code = 14
    default_hint = "run the command bump printed for it"


class SigningKeyError(BuilderError):
    """The OpenPGP key given to sign with cannot sign here (checked before anything is built):
    not a usable secret key, a v6 key, expired or revoked, or a wrong or missing passphrase."""

    exit_code = 15
    default_hint = (
        "check the key with `gpg --list-secret-keys`; the passphrase comes from "
        "QGA_SIGNING_PASSPHRASE or --signing-passphrase-file FILE"
    )


class SignatureMissingError(BuilderError):
    """`verify --public-key`: the directory has no SHA256SUMS.asc."""

    exit_code = 16
    default_hint = "the directory was published without a signature: ask for a signed one"


class SignatureError(BuilderError):
    """`verify --public-key`: SHA256SUMS.asc is not a good signature of SHA256SUMS by the key
    given (bad, made by another key, or by a key since revoked or expired)."""

    exit_code = 17
    default_hint = (
        "do not use these files: SHA256SUMS was changed, or signed by someone else, after "
        "the release; check that KEY is the publisher's public key"
    )


class TamperedFileError(BuilderError):
    """`verify --public-key`: a file differs from its line in the signed SHA256SUMS."""

    exit_code = 18
    default_hint = "do not use this file: it is not the one that was signed; download it again"


class MissingFileError(BuilderError):
    """`verify --public-key`: a file the signed SHA256SUMS lists is not there."""

    exit_code = 19
    default_hint = "the directory is incomplete: download it again"


class ExtraFileError(BuilderError):
    """`verify --public-key`: a file is there that the signed SHA256SUMS does not list."""

    exit_code = 20
    default_hint = (
        "nobody signed this file: remove it, or download the directory again (a signed "
        "directory holds exactly what SHA256SUMS lists, SHA256SUMS and SHA256SUMS.asc)"
    )


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived. A BaseException so generic handlers do not swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
