"""Fatal errors of a run. Each class carries the process exit code it maps to.

Only `builder.cli` turns these into an exit: everything below it raises, nothing calls sys.exit.
Messages are written for the user: they say what is wrong, where, and what to do.
"""

from __future__ import annotations


class BuilderError(Exception):
    """A failure the user can act on; printed as one message without a traceback."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class RecipeError(BuilderError):
    """The recipe file is missing, unreadable, not YAML, or does not validate."""

    exit_code = 2


class UsageError(BuilderError):
    """A command-line option is wrong or conflicts with another."""

    exit_code = 2


class InputError(BuilderError):
    """A pinned input (source, patch, base) is missing or its digest differs from the recipe."""

    exit_code = 3


class PatchError(BuilderError):
    """A patch of the series does not apply to the source."""

    exit_code = 4


class DockerUnavailableError(BuilderError):
    """The Docker daemon cannot be reached or went away."""

    exit_code = 5


class ImageError(BuilderError):
    """The build image or its base could not be made."""

    exit_code = 6


class StepError(BuilderError):
    """A step inside the build container exited non-zero."""

    exit_code = 7


class ArtifactError(BuilderError):
    """A built artifact is missing or fails verification."""

    exit_code = 8


class OutputError(BuilderError):
    """The output directory cannot be written, or is locked by another run."""

    exit_code = 9


class VerifyError(BuilderError):
    """Reproducibility or checksum verification found a difference."""

    exit_code = 10


class VmTestError(BuilderError):
    """The agent did not pass its test inside a virtual machine."""

    exit_code = 11


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived. A BaseException so generic handlers do not swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
