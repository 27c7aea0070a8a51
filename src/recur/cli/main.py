"""The command line: ``recur <command> ...`` (also ``python -m recur``).

This module only assembles the parser from the stage modules (each adds its commands with its
``register``), sets up the common options (``--threads``, logging) and runs the command. Every
command turns a :class:`recur.errors.RecurError` into one clear message on stderr and exit
status 2, with no traceback; set ``RECUR_DEBUG=1`` to see the traceback as well.

``recur --help`` lists the commands a person runs first (:data:`USER_COMMANDS`), then the
single steps (:data:`SINGLE_STEPS`), then the steps the workflow's rules call.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence

from recur.cli import (
    cohort,
    convert,
    deploy,
    evaluate,
    front,
    margin,
    models,
    preprocess,
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
    survival.register,
    reporting.register,
    front.register,
    deploy.register,
)

#: The commands a person runs, listed first by ``recur --help`` (``synth`` is also a rule's).
USER_COMMANDS = ("synth", "scan", "predict", "config-doc")
#: Commands of one series, mask or time point, run by hand (the rules call the per-patient ones).
SINGLE_STEPS = ("convert", "convert-timepoint", "check-mask", "register")
SINGLE_STEPS_HEADING = "single steps (by hand; the rules call the per-patient commands)"
#: The heading of every other command: the steps the workflow's rules (rules/*.smk) call.
WORKFLOW_HEADING = "workflow steps (called by the rules)"


class _Heading(argparse.Action):
    """A heading among the commands of ``recur --help`` (shown only, never parsed)."""

    def __init__(self, title: str) -> None:
        super().__init__(option_strings=[], dest=title, metavar="")
        self.title = title


class _CommandsHelpFormatter(argparse.HelpFormatter):
    """Lists the commands in sections: :data:`USER_COMMANDS`, then :data:`SINGLE_STEPS` under
    :data:`SINGLE_STEPS_HEADING`, then the others under :data:`WORKFLOW_HEADING`."""

    def _iter_indented_subactions(self, action: argparse.Action) -> Iterator[argparse.Action]:
        if not isinstance(action, argparse._SubParsersAction):
            yield from super()._iter_indented_subactions(action)
            return
        commands = {choice.dest: choice for choice in action._get_subactions()}
        workflow = [c for c in commands if c not in USER_COMMANDS + SINGLE_STEPS]
        self._indent()
        for heading, names in (
            (None, USER_COMMANDS),
            (SINGLE_STEPS_HEADING, SINGLE_STEPS),
            (WORKFLOW_HEADING, workflow),
        ):
            if heading:
                self._dedent()
                yield _Heading(heading)
                self._indent()
            for name in names:
                yield commands[name]
        self._dedent()

    def _format_action(self, action: argparse.Action) -> str:
        if isinstance(action, _Heading):
            return f"\n{' ' * self._current_indent}{action.title}:\n"
        return super()._format_action(action)


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
        description=__doc__.splitlines()[0],
        formatter_class=_CommandsHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads (a rule passes its `threads`)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    for register in REGISTERS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
