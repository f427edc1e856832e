"""The command line: `interhand-prep <command>`, the top-level scripts that wrap it, and their
shared plumbing (parsers built from the option records, logging, one-line errors).

Every command is listed once in COMMANDS: its name, the script that wraps it, a one-line summary,
how to build its parser, and the function that runs it, imported only when it runs, so `--help`
of any command imports nothing heavy.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .core.errors import InputError, Stopped, stop_on_sigterm
from .core.options import (CheckOptions, ExportOptions, GifOptions, MergeOptions, add_to_parser,
                           non_negative_int)
from .core.selection import SequenceSelector, add_selector_options
from .core import registry

PROG = "interhand-prep"


def add_runtime_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for input errors")


def stage_parser(prog: str, description: str, *records, with_sequence: bool = True) -> argparse.ArgumentParser:
    """A parser with the sequence options, the options of `records` and --quiet / --debug."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_selector_options(parser, with_sequence=with_sequence)
    for record in records:
        add_to_parser(parser, record, group_title=f"{record.__doc__.split(':')[0]} options" if len(records) > 1 else None)
    add_runtime_flags(parser)
    return parser


def run_main(parser: argparse.ArgumentParser, body: Callable[[argparse.Namespace], int | None],
             argv: Sequence[str] | None = None) -> int:
    """Parse, run `body`, and turn an InputError or OSError into one line on stderr and exit status 2."""
    args = parser.parse_args(argv)
    if getattr(args, "quiet", True) is False and not sys.stderr.isatty():
        args.quiet = True  # progress bars only on a terminal: in a log file they are carriage-return noise
    debug = getattr(args, "debug", False)
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format="%(levelname)s: %(message)s")
    prog = parser.prog
    stop_on_sigterm()  # scancel or a Slurm time limit stops like Ctrl-C: workers finish, the journal stays
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
    except KeyboardInterrupt as exc:
        what = "stopped by a signal" if isinstance(exc, Stopped) else "interrupted"
        print(f"{prog}: {what}; finished files are complete, rerun to do the rest", file=sys.stderr)
        return 130


# ---------------------------------------------------------------------------------------------
# The parsers


def _workers_alias(parser: argparse.ArgumentParser, dest: str) -> argparse.ArgumentParser:
    parser.add_argument("--workers", dest=dest, type=non_negative_int, metavar="N", default=argparse.SUPPRESS,
                        help=f"same as --{dest.replace('_', '-')}")
    return parser


def recording_stage_parser(entry) -> Callable[[str, str], argparse.ArgumentParser]:
    """The parser of a recording stage's command: the sequence options and its options record, and
    `--workers` for a record's worker count."""
    def build(prog: str, summary: str) -> argparse.ArgumentParser:
        parser = stage_parser(prog, summary, entry.options)
        for f in dataclasses.fields(entry.options):
            if f.name.endswith("_workers"):
                _workers_alias(parser, f.name)
        return parser
    return build


def _location(parser: argparse.ArgumentParser, seq: dict, capture: dict | None = None, out_root: str = "",
              split: str | None = None) -> None:
    """--capture, --seq, --split, --basedir and --out-root from the sequence record, with the
    argparse settings a command needs for --seq (and --capture, and the help of --split)."""
    overrides = {"seq": seq, "out_root": {"help": out_root}}
    if split:
        overrides["split"] = {"help": split}
    if capture is not None:
        overrides["capture"] = capture
    add_to_parser(parser, SequenceSelector, skip=("mano_dir", "hand_type", "overwrite"), overrides=overrides)


def check_seq_parser(prog: str, summary: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=summary + " The hands, MANO files and options it was "
                                     "processed with come from its manifest (prep.json); the options below override them.")
    parser.add_argument("path", nargs="?", type=Path, help="a processed or merged sequence folder (or use --capture/--seq)")
    _location(parser, seq={"required": False, "default": None}, capture={"required": False, "default": None},
              out_root="the --out-root the sequence was processed with, if any")
    add_to_parser(parser, CheckOptions)
    add_runtime_flags(parser)
    return parser


def export_parser(prog: str, summary: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=summary + " Images and masks are relative symbolic "
                                     "links (or copies); nothing of the sequence is rewritten.")
    add_to_parser(parser, SequenceSelector, skip=("mano_dir", "hand_type", "overwrite"),
                  overrides={"out_root": {"help": "the --out-root the sequence was processed with, if any"}})
    add_to_parser(parser, ExportOptions)
    add_runtime_flags(parser)
    return parser


def merge_seq_parser(prog: str, summary: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=summary)
    _location(parser, seq={"nargs": "+", "metavar": "ENTRY", "help": "sequences: seq, Capture<N>/seq or <split>/Capture<N>/seq"},
              capture={"required": False, "default": 0, "help": "default capture of entries (default: 0)"},
              out_root="where the sequences were processed to (and where merge/ goes)",
              split="default split of entries (default: train)")
    add_to_parser(parser, MergeOptions)
    add_runtime_flags(parser)
    return parser


def gif_parser(prog: str, summary: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=summary)
    _location(parser, seq={"nargs": "*", "required": False, "default": None,
                           "help": "only these sequences (default: every processed one)"},
              out_root="the --out-root the sequences were processed with (GIFs go under it too)")
    add_to_parser(parser, GifOptions)
    add_runtime_flags(parser)
    return parser


def process_parser(prog: str, summary: str, demo: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=summary)
    if not demo:
        parser.add_argument("seqs", nargs="*", help="sequence names")
        parser.add_argument("--all", action="store_true", help="every sequence of the capture")
        parser.add_argument("--list", type=Path, metavar="FILE", help="a file with one sequence name per line")
    parser.add_argument("--jobs", type=int, default=1, metavar="N", help="sequences processed in parallel (default: 1)")
    parser.add_argument("--logs", type=Path, default=None, metavar="DIR",
                        help="log folder (default: <out-root or basedir>/logs, beside the data); each sequence's log "
                             "gets a part per run")
    if not demo:
        parser.add_argument("--demo", action="store_true",
                            help="generate a synthetic capture under data/ if absent, process all of it, make GIFs")
        parser.add_argument("--status", action="store_true",
                            help="process nothing: show where the selected sequences stand (done, failed, interrupted, "
                                 "running, not started, from their logs) and the command that runs only the rest; "
                                 "exit 0 only when all are done (interhand-prep status)")
    add_selector_options(parser, with_sequence=False, capture_default=0)
    add_stage_switches(parser)
    for entry in registry.STAGES:
        add_to_parser(parser, entry.options, group_title=f"{entry.options.__doc__.split(':')[0]} options")
    add_runtime_flags(parser)
    if demo:
        from .core.constants import DEMO_SEQUENCES

        data = parser.add_argument_group("a synthetic capture of any size, not processed (--data-only)")
        data.add_argument("--data-only", action="store_true",
                          help="only generate the synthetic capture, for rehearsing a run before the real data; an "
                               "existing capture is refused unless --overwrite")
        data.add_argument("--sequences", type=int, default=None, metavar="N",
                          help=f"the first N of: {', '.join(n for n, _ in DEMO_SEQUENCES)} (default: 2)")
        data.add_argument("--cameras", type=int, default=None, metavar="C", help="cameras (default: 16)")
        data.add_argument("--frames", type=int, default=None, metavar="F", help="frames per sequence (default: 24)")
        parser.set_defaults(demo=True, seqs=[], all=True, list=None, parts=True,
                            **{entry.switch_dest: True for entry in registry.STAGES if entry.optional})
    return parser


def _status_parser(prog: str, summary: str) -> argparse.ArgumentParser:
    parser = process_parser(prog, summary)
    parser.add_argument("--summary", type=Path, metavar="FILE",
                        help="also write the table as tab-separated values (index, sequence, state, seconds, reason)")
    parser.set_defaults(status=True)
    return parser


def _submit_parser(prog: str, summary: str) -> argparse.ArgumentParser:
    parser = process_parser(prog, summary)
    group = parser.add_argument_group("Slurm")
    group.add_argument("--sbatch", metavar='"ARGS"', default="",
                       help='sbatch options for every task, e.g. "--time=2:00:00 --cpus-per-task=2 --partition=cpu"')
    group.add_argument("--max-parallel", type=int, default=None, metavar="N",
                       help="at most N tasks at once (sbatch --array=...%%N)")
    group.add_argument("--dry-run", action="store_true", help="print the batch script; submit nothing")
    parser.set_defaults(submit=True)
    return parser


def add_stage_switches(parser: argparse.ArgumentParser) -> None:
    """--<command> for each optional stage of the registry (off unless given; the demo runs them)."""
    for entry in registry.STAGES:
        if entry.optional:
            parser.add_argument(entry.switch, dest=entry.switch_dest, action="store_true",
                                help=f"also run {entry.command}: {entry.summary[0].lower()}{entry.summary[1:]}")


@dataclass(frozen=True)
class Command:
    name: str       # the subcommand of interhand-prep
    script: str     # the top-level script that wraps it
    summary: str    # one line, for `interhand-prep --help` and the command's own --help
    parser: Callable[[str, str], argparse.ArgumentParser]
    runs: str       # "module:function" taking the parsed arguments, imported when the command runs


COMMANDS = [
    *(Command(entry.command, entry.script, entry.summary, recording_stage_parser(entry),
              f"interhand_prep.stages.{entry.name}:main") for entry in registry.STAGES),
    Command("check-seq", "check_seq.py",
            "Verify a processed (or merged) sequence against the output contract, as a trainer reads it.",
            check_seq_parser, "interhand_prep.stages.check_seq:main"),
    Command("export", "export.py",
            "Export a processed sequence to nerfstudio, EasyMocap, COLMAP (a model per frame) or HandAvatar/OHTA.",
            export_parser, "interhand_prep.stages.export:main"),
    Command("merge-seq", "merge_seq.py", "Merge processed sequences into one, with relative symbolic links.",
            merge_seq_parser, "interhand_prep.stages.merge_seq:main"),
    Command("gif", "gif.py", "GIF previews of the processed sequences of a capture (masks tinted over with --overlay).",
            gif_parser, "interhand_prep.stages.gif:main"),
    Command("process", "process.sh", "Run every stage over sequences of a capture: parallel, resumable, logged.",
            process_parser, "interhand_prep.stages.process:main"),
    Command("submit", "process.sh --submit",
            "Submit the sequences of a capture as one Slurm array (a task each), and a job summarising it.",
            lambda prog, summary: _submit_parser(prog, summary), "interhand_prep.stages.process:main"),
    Command("status", "process.sh --status",
            "Where the sequences of a capture stand (done, failed, interrupted, running, not started), and what to rerun.",
            lambda prog, summary: _status_parser(prog, summary), "interhand_prep.stages.process:main"),
    Command("demo", "process.sh --demo",
            "Generate a synthetic capture and MANO model under data/ (if absent) and process all of it.",
            lambda prog, summary: process_parser(prog, summary, demo=True), "interhand_prep.stages.process:main"),
]
BY_NAME = {c.name: c for c in COMMANDS}


def _runner(command: Command) -> Callable:
    module, function = command.runs.split(":")
    return getattr(importlib.import_module(module), function)


def run_command(name: str, argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Run one command (as a subcommand or as its top-level script)."""
    command = BY_NAME[name]
    parser = command.parser(prog or f"{PROG} {name}", command.summary)
    return run_main(parser, lambda args: _runner(command)(args), argv)


def run_script(name: str, argv: Sequence[str] | None = None) -> int:
    """The entry of a top-level script: the command under the script's own name."""
    return run_command(name, argv, prog=BY_NAME[name].script.split()[0])


def main(argv: Sequence[str] | None = None) -> int:
    """`interhand-prep <command> [options]`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    width = max(len(c.name) for c in COMMANDS)
    listing = "\n".join(f"  {c.name:<{width}}  {c.summary}" for c in COMMANDS)
    usage = (f"usage: {PROG} <command> [options]\n\nTurn InterHand2.6M captures into training data for animatable "
             f"hand avatars.\n\ncommands:\n{listing}\n\n`{PROG} <command> --help` describes a command's options.")
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from . import __version__

        print(f"{PROG} {__version__}")
        return 0
    if argv[0] not in BY_NAME:
        import difflib

        close = difflib.get_close_matches(argv[0], list(BY_NAME), n=1)
        print(f"{PROG}: error: unknown command {argv[0]!r}" + (f"; did you mean {close[0]}?" if close else "")
              + f" (see {PROG} --help)", file=sys.stderr)
        return 2
    return run_command(argv[0], argv[1:])
