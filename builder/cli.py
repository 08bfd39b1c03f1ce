"""Command line: `python -m builder COMMAND` (also installed as `qga-builder`).

This is the one place that turns errors into exit codes and messages; everything below raises.
"""

from __future__ import annotations

import signal
import sys
import traceback
from collections.abc import Sequence
from types import FrameType

from builder import log
from builder.arguments import build_parser
from builder.errors import BuilderError, Interrupted
from builder.option_parser import Handler

__all__ = ["build_parser", "main"]
INTERNAL_ERROR = 70  # EX_SOFTWARE
# A closed terminal (SIGHUP) ends a run as Ctrl-C and SIGTERM do: containers removed, no output.
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    # Ignore further signals while the first one unwinds: cleanup must be allowed to finish.
    for each in HANDLED_SIGNALS:
        signal.signal(each, signal.SIG_IGN)
    raise Interrupted(signum)


def report_error(message: str, hint: str | None = None) -> None:
    if log.current_format() == "json":
        fields = {"hint": hint} if hint else {}
        log.get_logger().error(message, **fields)
    else:
        sys.stderr.write(f"qga-builder: error: {log.neutralize_lines(message)}\n")
        if hint:
            sys.stderr.write(f"  hint: {log.neutralize_lines(hint)}\n")
        sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    for each in HANDLED_SIGNALS:
        signal.signal(each, _raise_interrupted)
    from builder.engine import remove_live_containers

    verbose = False
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        verbose = args.verbose > 0
        log.configure(args.log_format, verbose)
        handler: Handler = args.handler
        return handler(args)
    except BuilderError as exc:
        report_error(exc.message, exc.hint)
        return exc.exit_code
    except Interrupted as exc:
        remove_live_containers()
        name = signal.Signals(exc.signum).name
        report_error(f"interrupted by {name}; removed this run's containers and temporary files")
        return exc.exit_code
    except Exception as exc:  # a bug: say so in one message; -v shows the traceback
        if verbose:
            traceback.print_exc()
        report_error(
            f"internal error: {type(exc).__name__}: {exc}",
            hint="this is a bug in qga-builder; rerun with -v to see the traceback",
        )
        return INTERNAL_ERROR
    finally:
        remove_live_containers()
