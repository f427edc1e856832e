"""Command-line plumbing shared by the scripts: parsers built from the option records, logging,
and one-line errors."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from typing import Callable, Sequence

from .errors import InputError
from .options import add_selector_options, add_to_parser


def stage_parser(prog: str, description: str, *records, with_sequence: bool = True) -> argparse.ArgumentParser:
    """A parser with the sequence options, the options of `records` and --quiet / --debug."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_selector_options(parser, with_sequence=with_sequence)
    for record in records:
        add_to_parser(parser, record, group_title=f"{record.__doc__.split(':')[0]} options" if len(records) > 1 else None)
    add_runtime_flags(parser)
    return parser


def add_runtime_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for input errors")


def run_main(parser: argparse.ArgumentParser, body: Callable[[argparse.Namespace], int | None],
             argv: Sequence[str] | None = None) -> int:
    """Parse, run `body`, and turn an InputError or OSError into one line on stderr and exit status 2."""
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format="%(levelname)s: %(message)s")
    prog = parser.prog
    try:
        return int(body(args) or 0)
    except InputError as exc:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {' '.join(str(exc).split())}", file=sys.stderr)  # always one line
        return 2
    except OSError as exc:  # disk full, permissions, a file where a folder should be...
        if debug:
            traceback.print_exc()
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"{prog}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; finished files are complete, rerun to do the rest", file=sys.stderr)
        return 130
