"""``ablate``'s entry point: parse (:mod:`.parser`), dispatch to a command
(:mod:`.commands`), and turn bad input into one ``ablate: error:`` line and exit code 2."""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Sequence

from ablate.cli.commands import (
    cmd_eval,
    cmd_grid,
    cmd_methods,
    cmd_report,
    cmd_search,
    cmd_teachers_list,
    cmd_teachers_train,
    cmd_train,
    cmd_ui,
    cmd_validate,
)
from ablate.cli.parser import Command, build_parser
from ablate.config import check_tracking_uri
from ablate.core import signals
from ablate.core.errors import BAD_INPUT, EXIT_TRACKING_LOST, TrackingLost, readable_line

EXIT_USAGE = 2


COMMANDS: dict[str, Command] = {
    "train": cmd_train, "search": cmd_search, "grid": cmd_grid, "report": cmd_report,
    "eval": cmd_eval, "methods": cmd_methods, "validate": cmd_validate,
    "teachers train": cmd_teachers_train, "teachers list": cmd_teachers_list, "ui": cmd_ui,
}


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = build_parser(COMMANDS)
    # Overrides may also follow options (`train c.yaml --resume seed=1`), which plain
    # parse_args would reject.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    if hasattr(args, "tracking_uri"):  # before any store is opened; None: $MLFLOW_TRACKING_URI
        check_tracking_uri(args.tracking_uri, existing=args.command == "report")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. SIGTERM and SIGHUP take Ctrl-C's path (:mod:`ablate.core.signals`)
    and exit 143 and 129; Ctrl-C exits 130."""
    signals.received.clear()
    if threading.current_thread() is threading.main_thread():
        signals.install()
    try:
        args = _parse(argv)
        return signals.exit_code(args.func(args))
    except BAD_INPUT as exc:
        # Capped here, once for every error: 10,000 unknown keys or a 100 KB name stay one
        # readable line rather than hundreds of KB.
        print(f"ablate: error: {readable_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        print(f"ablate: interrupted{f' ({exc})' if str(exc) else ''}", file=sys.stderr)
        return signals.exit_code(signals.EXIT_INTERRUPTED)
    except TrackingLost as exc:  # outside a job's run (which says how to resume): one line
        print(f"ablate: error: {exc}; run the command again once it answers", file=sys.stderr)
        return EXIT_TRACKING_LOST


