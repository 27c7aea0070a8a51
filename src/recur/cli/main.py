"""The command line: ``recur <command> ...`` (also ``python -m recur``).

This module only assembles the parser from the stage modules (each adds its commands with its
``register``), sets up the common options (``--threads``, logging, ``--version``) and runs the
command. Every command turns a :class:`recur.errors.RecurError` into one clear message on
stderr and exit status 2, with no traceback; set ``RECUR_DEBUG=1`` to see the traceback as well.

``recur --help`` lists the commands in two titled groups: those a person runs
(:data:`PERSON_COMMANDS`, under :data:`PERSON_HEADING`), then the steps the workflow's rules
call (every other command, under :data:`WORKFLOW_HEADING`). Bare ``recur`` prints the same help.
Help texts are plain text: no reST markup reaches the terminal.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap
from collections.abc import Callable, Sequence

from recur.cli import (
    cohort,
    convert,
    deploy,
    evaluate,
    front,
    margin,
    models,
    preprocess,
    radiomics,
    reporting,
    survival,
    synthetic,
)
from recur.errors import RecurError

#: The ``register(subparsers)`` of every stage module, in the order their commands are added.
REGISTERS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    synthetic.register,
    cohort.register,
    convert.register,
    preprocess.register,
    models.register,
    evaluate.register,
    margin.register,
    radiomics.register,
    survival.register,
    reporting.register,
    front.register,
    deploy.register,
)

#: The commands a person runs, in the order ``recur --help`` lists them (``synth`` is also a
#: rule's; ``convert-timepoint``, ``check-mask`` and ``register`` are single steps of what the
#: rules' per-patient commands do).
PERSON_COMMANDS = (
    "synth",
    "scan",
    "convert",
    "convert-timepoint",
    "roi",
    "check-mask",
    "register",
    "predict",
    "config-doc",
)
PERSON_HEADING = "commands a person runs"
#: The heading of every other command: the steps the workflow's rules (rules/*.smk) call.
WORKFLOW_HEADING = "workflow steps (called by the rules)"

DESCRIPTION = (
    "recur: early recurrence of hepatocellular carcinoma after thermal ablation, predicted "
    "from longitudinal MRI and clinical variables. Research software, not for clinical use "
    "and not a medical device."
)
EPILOG = (
    "The whole study runs with snakemake, whose rules call the workflow steps "
    "(docs/guide/running.md). recur COMMAND --help describes one command."
)


class _CommandsHelpFormatter(argparse.HelpFormatter):
    """Lists the commands in two titled groups: :data:`PERSON_COMMANDS` under
    :data:`PERSON_HEADING` (the title of the subcommands' group), then the others under
    :data:`WORKFLOW_HEADING`, each as one line like an option of ``recur --help``; lines wrap at
    spaces only."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        """Wrap at spaces only: a command's name (``convert-patient``) stays whole."""
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def add_arguments(self, actions) -> None:
        for action in actions:
            if isinstance(action, argparse._SubParsersAction):
                self._add_command_groups(action)
            else:
                self.add_argument(action)

    def _add_command_groups(self, action: argparse._SubParsersAction) -> None:
        commands = {choice.dest: choice for choice in action._get_subactions()}
        for name in PERSON_COMMANDS:
            self.add_argument(commands[name])
        self.end_section()  # the section parser.format_help started, titled PERSON_HEADING
        self.start_section(WORKFLOW_HEADING)  # ended by parser.format_help
        for name, choice in commands.items():
            if name not in PERSON_COMMANDS:
                self.add_argument(choice)


def package_version() -> str:
    """The installed package's version (its metadata), or a note that it is not installed."""
    from importlib import metadata

    try:
        return metadata.version("recur")
    except metadata.PackageNotFoundError:
        return "(version unknown: the package is not installed)"


class _Version(argparse.Action):
    """``--version``: print ``recur <version>`` and exit; the version is looked up only then."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs) -> None:
        super().__init__(
            option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0, **kwargs
        )

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"{parser.prog} {package_version()}")
        parser.exit()


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _threads(n: int | None) -> None:
    """Respect the rule's ``threads`` in every numeric library before any heavy import."""
    if n is None:
        return
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    os.environ["RECUR_THREADS"] = str(n)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recur",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=_CommandsHelpFormatter,
    )
    parser.add_argument("-V", "--version", action=_Version, help="print the version and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="CPU threads of the numeric libraries (a rule passes its threads)",
    )
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", title=PERSON_HEADING, help="the command to run"
    )
    for register in REGISTERS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare ``recur``: the help, not an error
        parser.print_help()
        return 0
    _setup_logging(args.verbose)
    _threads(args.threads)
    try:
        args.func(args)
    except RecurError as exc:
        if os.environ.get("RECUR_DEBUG"):
            raise
        print(f"recur {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0
