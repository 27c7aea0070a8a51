"""What ``recur --help`` and every ``recur COMMAND --help`` show a person: the commands in two
titled groups, ``--version``, the help of bare ``recur``, plain text (no reST markup), a help
text for every option, and ``predict``'s description, example and not-for-clinical-use
warning."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata

from recur.cli import deploy
from recur.cli import main as cli

from ..conftest import REPO
from .test_cli import _rule_commands

#: reST markup that must not reach a terminal: ``literal``, :role:`target`, `interpreted`.
REST_MARKUP = re.compile(r"``|:[a-z]+:`|`[^`\s][^`]*`")


def _run(capsys, monkeypatch, argv: list[str]) -> tuple[int, str]:
    """(exit status, stdout) of ``recur ARGV`` in-process, at 100 columns."""
    monkeypatch.setenv("COLUMNS", "100")
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().out


def help_groups(text: str) -> dict[str, list[str]]:
    """{title: [command, ...]} of a help text: a group opens at a line ``title:`` in column 0;
    its commands are the lines ``  name  help`` (an option line starts with ``-`` instead)."""
    groups: dict[str, list[str]] = {}
    title = None
    for line in text.splitlines():
        if m := re.fullmatch(r"(\S.*):", line):
            title = m.group(1)
            groups[title] = []
        elif title and (m := re.match(r"  ([a-z][a-z0-9-]*)(?:\s|$)", line)):
            groups[title].append(m.group(1))
    return {t: commands for t, commands in groups.items() if commands}


def _parsers(
    parser: argparse.ArgumentParser, name: str = "recur"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """The parser and every subcommand's parser, each with its command line."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {command}")


def _commands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def test_help_groups_the_commands_a_person_runs_apart_from_the_workflow_steps(capsys, monkeypatch):
    code, out = _run(capsys, monkeypatch, ["--help"])
    assert code == 0
    groups = help_groups(out)
    assert list(groups) == [cli.PERSON_HEADING, cli.WORKFLOW_HEADING]
    person, workflow = groups[cli.PERSON_HEADING], groups[cli.WORKFLOW_HEADING]
    assert person == list(cli.PERSON_COMMANDS)
    assert {"synth", "scan", "convert", "roi", "check-mask", "predict", "config-doc"} <= set(person)
    # every command once, in one group or the other
    assert sorted(person + workflow) == sorted(_commands(cli.build_parser()).choices)
    # the workflow steps are exactly the commands the rules call and no person runs
    assert set(workflow) == _rule_commands() - set(person)


def test_version_prints_the_installed_version(capsys, monkeypatch):
    want = f"recur {metadata.version('recur')}\n"
    for flag in ("--version", "-V"):
        assert _run(capsys, monkeypatch, [flag]) == (0, want)


def test_bare_recur_prints_the_help_and_exits_0(capsys, monkeypatch):
    code, out = _run(capsys, monkeypatch, [])
    assert code == 0
    assert out == _run(capsys, monkeypatch, ["--help"])[1]
    # the real process too: exit status 0, the help on stdout, nothing on stderr
    path = [str(REPO / "src"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
    res = subprocess.run(
        [sys.executable, "-m", "recur"], capture_output=True, text=True, env=env, check=False
    )
    assert (res.returncode, res.stderr) == (0, "")
    assert res.stdout.startswith("usage: recur ")
    assert cli.WORKFLOW_HEADING in res.stdout


def test_rest_markup_pattern_by_hand():
    for marked in ("``recur <command>``", ":class:`X`", ":func:`f`", "its `threads`"):
        assert REST_MARKUP.search(marked), marked
    for plain in ("recur COMMAND --help", "{PS,AP,PVP,DP}.nii.gz", "'full' or a fold", "a:b"):
        assert not REST_MARKUP.search(plain), plain


def test_no_help_text_holds_rest_markup(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    for name, parser in _parsers(cli.build_parser()):
        text = parser.format_help()
        found = REST_MARKUP.findall(text)
        assert not found, f"{name} --help: {found}"


def test_every_option_of_every_command_has_help():
    parser = cli.build_parser()
    missing = []
    for name, p in _parsers(parser):
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if not (isinstance(action.help, str) and action.help.strip()):
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, missing
    for choice in _commands(parser)._choices_actions:  # the one-line help of each command
        assert (choice.help or "").strip(), choice.dest


def _normalised(text: str) -> str:
    return " ".join(text.split())


def test_predict_help_has_a_description_the_example_and_the_warning(capsys, monkeypatch):
    code, out = _run(capsys, monkeypatch, ["predict", "--help"])
    assert code == 0
    flat = _normalised(out)
    assert flat.startswith("usage: recur predict ")
    assert "Score new patients from their DICOM series" in flat
    # the example command line is the one of docs/guide/predict.md
    guide = (REPO / "docs/guide/predict.md").read_text()
    example = re.search(r"## `recur predict`\n\n```bash\n(.*?)```", guide, re.S).group(1)
    assert _normalised(example) == _normalised(deploy.PREDICT_EXAMPLE)
    assert f"example: {_normalised(example)}" in flat
    # the warning words the guide's, before the options
    warning = re.search(r"^> \*\*Not for clinical use\.\*\*(.*?)\n\n", guide, re.S | re.M)
    guide_warning = _normalised("Not for clinical use." + warning.group(1).replace("\n>", ""))
    assert _normalised(deploy.PREDICT_WARNING).lower() == guide_warning.lower()
    assert flat.index(_normalised(deploy.PREDICT_WARNING)) < flat.index("options:")
    # the one-line help in recur --help says it too
    assert "not for clinical use" in _run(capsys, monkeypatch, ["--help"])[1]
