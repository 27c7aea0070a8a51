"""The command line itself: ``recur --help``'s sections, the commands the rules call, the entry
points (the console script and ``python -m recur``)."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import tomllib

import pytest

from recur.cli import main as cli

from ..conftest import REPO

#: ``python -m recur [--threads {threads}] <command>`` in a rule's shell command.
RULE_CALL = re.compile(r"python -m recur(?:\s+--threads\s+\{threads\})?\s+([a-z][a-z0-9-]*)")


def _rule_commands() -> set[str]:
    text = "\n".join(p.read_text() for p in sorted((REPO / "rules").glob("*.smk")))
    text += (REPO / "Snakefile").read_text()
    return set(RULE_CALL.findall(text))


def _main_help(capsys, monkeypatch) -> list[str]:
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out.splitlines()


def _listed(lines: list[str]) -> dict[str, int]:
    """{command: line number} of the commands ``recur --help`` lists (2-space indent)."""
    found: dict[str, int] = {}
    for i, line in enumerate(lines):
        m = re.match(r"  ([a-z][a-z0-9-]*)(?:\s|$)", line)
        if m:
            assert m.group(1) not in found, f"{m.group(1)} listed twice"
            found[m.group(1)] = i
    return found


def test_rules_call_commands_of_the_parser(capsys):
    """Every command a rule calls exists: ``recur <command> --help`` answers with its usage."""
    commands = _rule_commands()
    assert {"synth", "validate-cohort", "convert-patient", "train-dl", "table2"} <= commands
    for command in sorted(commands):
        with pytest.raises(SystemExit) as exc:
            cli.main([command, "--help"])
        assert exc.value.code == 0, command
        assert capsys.readouterr().out.startswith(f"usage: recur {command} "), command


def test_help_lists_every_command_once(capsys, monkeypatch):
    """No command is lost from (or doubled in) the groups of ``recur --help``."""
    parser = cli.build_parser()
    listed = _listed(_main_help(capsys, monkeypatch))
    for command in listed:
        with pytest.raises(SystemExit) as exc:
            parser.parse_args([command, "--help"])
        assert exc.value.code == 0, command
    capsys.readouterr()
    with pytest.raises(SystemExit):
        parser.parse_args(["no-such-command"])
    assert "invalid choice" in capsys.readouterr().err
    assert len(listed) >= 38


def test_recur_error_is_one_line_without_traceback(capsys, monkeypatch):
    monkeypatch.delenv("RECUR_DEBUG", raising=False)
    argv = ["figures", "--kind", "km", "--clinical", "c", "--split", "s", "--outdir", "o"]
    assert cli.main([*argv, "--predictions", "bad"]) == 2
    err = capsys.readouterr().err
    assert err == "recur figures: error: --predictions expects MODEL=PATH, got 'bad'\n"


def test_console_script_and_module_entry_points():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    target = pyproject["project"]["scripts"]["recur"]
    module, func = target.split(":")
    assert getattr(importlib.import_module(module), func) is cli.main
    path = [str(REPO / "src"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
    res = subprocess.run(
        [sys.executable, "-m", "recur", "--help"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert cli.WORKFLOW_HEADING in res.stdout


def test_building_the_parser_reads_the_schema_once_and_imports_no_validator():
    """Every job of the workflow builds the whole parser (options default to the schema's
    values): one parse of the schema per process, and no jsonschema import (~0.15 s each)."""
    import subprocess
    import sys

    code = (
        "import sys; from recur import config; from recur.cli import main; "
        "main.build_parser(); main.build_parser(); "
        "print(config._parsed_schema.cache_info().misses, 'jsonschema' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "False"]


def test_image_steps_without_the_cohort_tables_import_neither_pandas_nor_pydicom():
    """The crop and post-to-pre registration jobs read NIfTI files only: their exclusion
    wrapper (input/output lists, path redaction) must not import pandas or pydicom (~0.35 s
    and ~0.25 s a job); a step given the cohort's tables (conversion) does."""
    import subprocess
    import sys

    code = (
        "import argparse, sys; from recur.cli.common import _step_files, redactor; "
        "a = argparse.Namespace(registered_pre='r/pre', registered_post='r/post', "
        "mask_pre='m/pre.nii.gz', mask_post='m/post.nii.gz', post_to_pre=None, out='c.npz'); "
        "_step_files(a, 'crop'); redactor(a)('x'); "
        "b = argparse.Namespace(pre_dp='a', post_dp='b', pre_mask='c', post_mask='d', "
        "out_tfm='e', out_mask='f', qc=None, qc_json=None); _step_files(b, 'margin_register'); "
        "print('pandas' in sys.modules, 'pydicom' in sys.modules); "
        "_step_files(argparse.Namespace(timepoint='pre', outdir='n/pre'), 'convert'); "
        "print('pydicom' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "True"]
