"""The workflow on a SLURM cluster: a single-node cluster on localhost, no accounting database.

The slow test starts munged, slurmctld and slurmd by hand (tests/workflow/slurm_cluster.py; Debian's
slurm-wlm and munge are apt-installed when missing), runs the tiny study end to end (the
default target: per-patient chains grouped into SLURM jobs, training, evaluation, survival,
reporting) once with ``profiles/local`` and once with ``profiles/slurm-localhost`` in two
scratch working directories, and checks that every job of the SLURM run went through ``sbatch``
(job ids in snakemake's log, the executor plugin's per-job SLURM logs, the jobs COMPLETED in
``squeue``) and that both runs wrote byte-identical outputs. The daemons are always stopped at
the end.

Where slurm is missing and cannot be installed (no apt-get, not root) the test is skipped,
except under CI (environment variable ``CI`` set), where it fails instead.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from ..conftest import REPO, TINY_CONFIG
from .slurm_cluster import LocalSlurm, ensure_installed

# What the test runs: the targets (relative to the working directory; none: the workflow's
# default target, the whole study) and the configuration (the tiny study of the end-to-end
# tests: 26 patients, training shortened).
TARGETS: tuple[str, ...] = ()
CONFIG_YAML = TINY_CONFIG
# Extra snakemake arguments of the SLURM run only. Per-patient jobs (conversion,
# registration, crops, margin) are short, each a SLURM job plus a status-check delay that the
# executor plugin lengthens by 10 s per check that finds nothing finished; the profile groups
# each patient's chain (group "patient", 10 patients per SLURM job); one patient per SLURM job
# would be ("--group-components", "patient=1") (docs/guide/cluster.md).
SLURM_EXTRA_ARGS: tuple[str, ...] = ()

#: Rules Snakemake completes without running anything (no job to submit).
NO_JOB_RULES = frozenset({"all"})
#: Result folders whose files legitimately differ between runs (timings, timestamps).
NOT_COMPARED = ("results/logs/", "results/benchmarks/")
#: Files that differ byte-wise between two processes whatever the data: a skops archive
#: holds Python object ids (its schema's ``__id__``s and member names). The models they hold
#: are compared through their predictions (``results/predictions/``, compared byte for byte),
#: and the JSON records that give their sha256 are compared without it (DIGEST_KEYS).
NOT_COMPARED_SUFFIXES = (".skops",)
#: Table columns that hold wall-clock times (e.g. registration QC), left out of the comparison.
TIMING_COLUMNS = frozenset({"seconds"})
#: Keys of JSON records that hold wall-clock times (e.g. the margin registration's), left out.
TIMING_KEYS = frozenset({"seconds", "rigid_seconds", "bspline_seconds"})
#: Keys of JSON records that hold files' sha256 (model manifests, the bundle's manifest):
#: every file they name is compared on its own.
DIGEST_KEYS = frozenset({"sha256", "files"})
#: Per-run time limit of each snakemake call (seconds).
RUN_TIMEOUT = 1800

SUBMITTED = re.compile(r"Job (\S+) has been submitted with SLURM jobid (\d+)")
#: How snakemake announces a job it runs itself (here: inside the SLURM allocation): a rule's
#: as "localrule <name>:", a checkpoint's as "localcheckpoint <name>:".
LOCALRULE = re.compile(r"^local(?:rule|checkpoint) (\w+):$", re.MULTILINE)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def slurm() -> Iterator[LocalSlurm]:
    """A running single-node cluster; its daemons are stopped however the test ends."""
    try:
        why_not = ensure_installed()
    except RuntimeError as exc:
        pytest.fail(f"could not install SLURM: {exc}")
    if why_not is None and os.geteuid() != 0:
        why_not = "the test cluster's slurmd must run as root"
    if why_not is not None:
        if in_ci():
            pytest.fail(f"SLURM test cannot run under CI: {why_not}")
        pytest.skip(why_not)
    cluster = LocalSlurm()
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    yield cluster
    cluster.stop()


def run_env(cluster: LocalSlurm) -> dict[str, str]:
    """The cluster's environment with this interpreter's bin directory first on PATH.

    The plugin submits ``python -m snakemake`` and the rules call ``python -m recur``; both
    must resolve to the project's environment inside the SLURM jobs (sbatch --export=ALL).
    """
    env = cluster.env
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
    env.pop("SNAKEMAKE_PROFILE", None)
    return env


def snakemake(
    workdir: Path, profile: str, configfile: Path, env: dict[str, str], *extra: str
) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable, "-m", "snakemake",
        *TARGETS,
        "-s", str(REPO / "Snakefile"),
        "-d", str(workdir),
        "--profile", str(REPO / "profiles" / profile),
        "--configfile", str(configfile),
        *extra,
    ]  # fmt: skip
    return subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
    )


def job_stats(log: str) -> Counter[str]:
    """{rule: number of jobs} from the 'Job stats' table snakemake prints before running."""
    counts: Counter[str] = Counter()
    block = log.split("Job stats:", 1)[1] if "Job stats:" in log else ""
    for line in block.splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        if m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts


def profile_groups(profile: Path) -> tuple[frozenset[str], int]:
    """The rules a Snakemake profile groups as ``patient`` and how many patients' chains it
    packs into one SLURM job (its ``groups:`` and ``group-components:`` entries)."""
    import yaml

    cfg = yaml.safe_load(profile.read_text(encoding="utf-8"))
    grouped = frozenset(
        rule for rule, group in (g.split("=") for g in cfg.get("groups", [])) if group == "patient"
    )
    per_job = dict(g.split("=") for g in cfg.get("group-components", [])).get("patient", "1")
    return grouped, int(per_job)


def test_profile_groups_reads_the_localhost_profile():
    grouped, per_job = profile_groups(REPO / "profiles" / "slurm-localhost" / "config.yaml")
    assert {"convert", "register", "crop", "margin_register", "margin_metrics"} <= grouped
    assert per_job == 10


def _without_timings(doc: object) -> object:
    if isinstance(doc, dict):
        skip = TIMING_KEYS | DIGEST_KEYS
        return {k: _without_timings(v) for k, v in doc.items() if k not in skip}
    if isinstance(doc, list):
        return [_without_timings(v) for v in doc]
    return doc


def file_digest(path: Path) -> str:
    """sha256 of a file; of a gzip file's content (the deflate stream is not canonical: ISA-L,
    which recur.io.gzip_file uses, once wrote a different stream for the same registered volume
    in a SLURM job step than locally); of a CSV table without its wall-clock columns
    (TIMING_COLUMNS); of a JSON record without its wall-clock keys (TIMING_KEYS) and file
    digests (DIGEST_KEYS)."""
    if path.suffix == ".gz":
        import gzip

        with gzip.open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    if path.suffix == ".json":
        import json

        doc = _without_timings(json.loads(path.read_text(encoding="utf-8")))
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    if path.suffix == ".csv":
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        if TIMING_COLUMNS & set(table.columns):
            data = table.drop(columns=sorted(TIMING_COLUMNS & set(table.columns)))
            return hashlib.sha256(data.to_csv(index=False).encode()).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def output_hashes(workdir: Path) -> dict[str, str]:
    """Digest of every file under results/ (except logs and benchmarks), by relative path."""
    hashes = {}
    for path in sorted((workdir / "results").rglob("*")):
        rel = path.relative_to(workdir).as_posix()
        if (
            path.is_file()
            and not rel.startswith(NOT_COMPARED)
            and path.suffix not in NOT_COMPARED_SUFFIXES
        ):
            hashes[rel] = file_digest(path)
    return hashes


def test_file_digest_ignores_only_timing_columns(tmp_path: Path):
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    a.write_text("phase,mi,seconds\nPS,-1.5,0.496\n")
    b.write_text("phase,mi,seconds\nPS,-1.5,0.115\n")
    c.write_text("phase,mi,seconds\nPS,-1.6,0.496\n")
    assert file_digest(a) == file_digest(b)
    assert file_digest(a) != file_digest(c)
    f, g = tmp_path / "f.json", tmp_path / "g.json"
    f.write_text('{"tre": 0.5, "seconds": 1.2, "qc": [{"rigid_seconds": 0.7, "ncc": 0.9}]}')
    g.write_text('{"tre": 0.5, "seconds": 0.3, "qc": [{"rigid_seconds": 0.1, "ncc": 0.9}]}')
    assert file_digest(f) == file_digest(g)
    f.write_text('{"file": "model.skops", "sha256": "ab12", "features": ["age"]}')
    g.write_text('{"file": "model.skops", "sha256": "cd34", "features": ["age"]}')
    assert file_digest(f) == file_digest(g)
    g.write_text('{"tre": 0.6, "seconds": 1.2, "qc": [{"rigid_seconds": 0.7, "ncc": 0.9}]}')
    assert file_digest(f) != file_digest(g)
    d, e = tmp_path / "d.bin", tmp_path / "e.bin"
    d.write_bytes(b"seconds 1")
    e.write_bytes(b"seconds 2")
    assert file_digest(d) != file_digest(e)
    # two deflate streams of the same content (levels 1 and 9) compare equal; other content not
    import gzip

    h, i, j = tmp_path / "h.nii.gz", tmp_path / "i.nii.gz", tmp_path / "j.nii.gz"
    volume = bytes(range(256)) * 400
    h.write_bytes(gzip.compress(volume, 1, mtime=0))
    i.write_bytes(gzip.compress(volume, 9, mtime=0))
    j.write_bytes(gzip.compress(volume[::-1], 1, mtime=0))
    assert h.read_bytes() != i.read_bytes()
    assert file_digest(h) == file_digest(i) != file_digest(j)


def test_job_stats_parser():
    log = (
        "Job stats:\njob                count\n---------------  -------\n"
        "synth_cohort           1\nvalidate_cohort        1\ntotal                  2\n\n"
        "Select jobs to execute...\nrule x:\n    1\n"
    )
    assert job_stats(log) == {"synth_cohort": 1, "validate_cohort": 1}


@pytest.mark.slow
def test_workflow_on_slurm_matches_local_run(slurm: LocalSlurm, tmp_path: Path):
    env = run_env(slurm)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(CONFIG_YAML, encoding="utf-8")
    local_dir, slurm_dir = tmp_path / "local", tmp_path / "slurm"
    local_dir.mkdir()
    slurm_dir.mkdir()

    t0 = time.monotonic()
    local = snakemake(local_dir, "local", cfg, env, "--cores", "2")
    t_local = time.monotonic() - t0
    assert local.returncode == 0, f"local run failed:\n{local.stderr[-6000:]}"
    planned = job_stats(local.stderr + local.stdout)
    expected_jobs = Counter({r: n for r, n in planned.items() if r not in NO_JOB_RULES})
    assert expected_jobs, f"no job ran locally:\n{local.stderr[-3000:]}"

    t0 = time.monotonic()
    on_slurm = snakemake(slurm_dir, "slurm-localhost", cfg, env, *SLURM_EXTRA_ARGS)
    t_slurm = time.monotonic() - t0
    log = on_slurm.stderr + on_slurm.stdout
    assert on_slurm.returncode == 0, f"SLURM run failed:\n{log[-6000:]}\n{slurm.diagnostics()}"
    print(f"local run {t_local:.1f} s, SLURM run {t_slurm:.1f} s, jobs {dict(expected_jobs)}")

    # Every job went through sbatch: SLURM job ids in snakemake's log (one per job, or per
    # group of jobs) ...
    assert job_stats(log) == planned
    slurm_ids = [m.group(2) for m in SUBMITTED.finditer(log)]
    assert slurm_ids, log[-6000:]
    assert len(set(slurm_ids)) == len(slurm_ids)
    # one SLURM job per ungrouped job, and the grouped per-patient jobs packed
    grouped, per_job = profile_groups(REPO / "profiles" / "slurm-localhost" / "config.yaml")
    n_grouped = sum(n for rule, n in expected_jobs.items() if rule in grouped)
    n_alone = sum(expected_jobs.values()) - n_grouped
    n_chains = max((expected_jobs[rule] for rule in grouped), default=0)
    assert n_grouped > 0, expected_jobs
    assert n_alone + -(-n_chains // per_job) <= len(slurm_ids) < n_alone + n_grouped, (
        len(slurm_ids),
        n_alone,
        n_grouped,
    )
    # ... each with its plugin log (kept by the profile), named by the SLURM job id ...
    logs = sorted((slurm_dir / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert sorted(p.stem for p in logs) == sorted(slurm_ids), logs
    # ... which slurmctld ran to completion ...
    queue = slurm.run("squeue", "--states=all", "--noheader", "--format=%i|%T").stdout
    states = dict(line.split("|") for line in queue.split())
    assert {states.get(i) for i in slurm_ids} == {"COMPLETED"}, queue
    # ... and inside which snakemake's SLURM job step ran each rule's job exactly once.
    texts = [p.read_text(errors="replace") for p in logs]
    for p, text in zip(logs, texts, strict=True):
        assert "--executor slurm-jobstep" in text, f"{p}:\n{text[-3000:]}"
    ran = Counter(m.group(1) for t in texts for m in LOCALRULE.finditer(t))
    assert ran == expected_jobs, (
        f"missing in the SLURM job steps: {dict(expected_jobs - ran)}, "
        f"extra: {dict(ran - expected_jobs)}"
    )

    # Same outputs, byte for byte.
    local_hashes, slurm_hashes = output_hashes(local_dir), output_hashes(slurm_dir)
    for target in TARGETS:
        if target.startswith("results/"):
            assert target in slurm_hashes, sorted(slurm_hashes)
    differing = sorted(
        rel for rel in local_hashes.keys() | slurm_hashes.keys()
        if local_hashes.get(rel) != slurm_hashes.get(rel)
    )  # fmt: skip
    assert not differing, f"{len(differing)} outputs differ between the runs: {differing[:20]}"
    assert len(local_hashes) > 0
