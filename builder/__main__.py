"""`python -m builder`: the same as the `qga-builder` console script.

Typed in a checkout with a `python` that lacks the dependencies (no virtualenv active), it
runs again under the checkout's `.venv`, which `scripts/setup.sh` makes, instead of failing
on the first import.
"""

import os
import sys
from pathlib import Path


def _dependencies_missing() -> str | None:
    for module in ("docker", "yaml", "pydantic", "structlog"):
        try:
            __import__(module)
        except ImportError:
            return module
    return None


def _reenter_virtualenv(missing: str) -> None:
    checkout = Path(__file__).resolve().parent.parent
    venv_python = checkout / ".venv" / "bin" / "python"
    here = Path(sys.prefix).resolve()
    # Only ever from another interpreter into the venv's: never a loop.
    if venv_python.is_file() and here != venv_python.parent.parent.resolve():
        os.execv(str(venv_python), [str(venv_python), "-m", "builder", *sys.argv[1:]])
    sys.stderr.write(
        f"qga-builder: error: this Python ({sys.executable}) lacks the module {missing!r}\n"
        f"  hint: run `scripts/setup.sh` in {checkout} (it makes .venv), then "
        "`python -m builder ...` again, or `. .venv/bin/activate`\n"
    )
    sys.exit(2)


if __name__ == "__main__":
    missing = _dependencies_missing()
    if missing is not None:
        _reenter_virtualenv(missing)
    from builder.cli import main

    sys.exit(main())
