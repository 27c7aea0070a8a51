"""A throwaway single-node SLURM cluster on localhost, for the SLURM workflow test.

Everything lives in one private temporary directory: ``slurm.conf``, a munge key of its own,
munged's socket, the daemons' state, spool, pid and log files. SLURM commands find the
configuration through ``SLURM_CONF``; but the Snakemake job step drops every ``SLURM_*``
variable before its nested ``srun``, which then reads Debian's default ``/etc/slurm/slurm.conf``.
So that path becomes, while the cluster runs, a symbolic link to the temporary file: an existing
file there is moved aside and put back by ``stop()`` (and by the next ``start()`` if a crashed
run left the link behind).
The daemons run in the foreground as child processes of the test (no systemd needed) on free
TCP ports, and ``stop()`` ends exactly those processes, by their ids.

Needs root (slurmd starts the jobs of any user) and Debian's ``slurm-wlm`` and ``munge``
packages; ``ensure_installed()`` installs them with apt-get when they are missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

#: The executables a cluster needs: the daemons and the client commands the plugin calls.
NEEDED = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "srun")
APT_PACKAGES = ("slurm-wlm", "munge")
#: Debian puts the daemons in /usr/sbin, which a non-login PATH may lack.
SBIN = ("/usr/sbin", "/sbin")
#: Where Debian's SLURM commands read their configuration when SLURM_CONF is not set.
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
#: Where an existing SYSTEM_CONF waits while the test cluster runs.
SYSTEM_CONF_BACKUP = SYSTEM_CONF.with_name("slurm.conf.before-recur-test")
#: Prefix of the cluster's temporary directory (a link into one is a leftover of ours).
TMP_PREFIX = "recur-slurm-"


def which(name: str) -> str | None:
    """``shutil.which`` that also looks in the sbin directories."""
    path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN])
    return shutil.which(name, path=path)


def missing_programs() -> list[str]:
    """The programs of ``NEEDED`` that are not installed."""
    return [p for p in NEEDED if which(p) is None]


def ensure_installed(timeout: float = 240) -> str | None:
    """Install ``slurm-wlm`` and ``munge`` with apt-get if any program is missing.

    Returns None when everything is installed (now or already), else why it could not be
    (no apt-get, not root). Raises ``RuntimeError`` when apt-get ran and failed.
    """
    if not missing_programs():
        return None
    if shutil.which("apt-get") is None:
        return f"{', '.join(missing_programs())} missing and apt-get unavailable"
    if os.geteuid() != 0:
        return f"{', '.join(missing_programs())} missing and not root (cannot apt-get install)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Without systemd, the packages' post-install scripts would start munged and slurmd
    # through their init scripts; a policy-rc.d that says "no" (101) stops that for the
    # duration of the install, so the only daemons are the ones LocalSlurm starts and stops.
    policy = Path("/usr/sbin/policy-rc.d")
    own_policy = not _present(policy)
    if own_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        for cmd in (
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *APT_PACKAGES],
        ):
            res = subprocess.run(
                cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False
            )
            if res.returncode != 0:
                raise RuntimeError(
                    f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n"
                    f"{res.stderr[-3000:]}"
                )
    finally:
        if own_policy:
            policy.unlink(missing_ok=True)
    if missing_programs():
        raise RuntimeError(f"still missing after apt-get install: {missing_programs()}")
    return None


def _present(path: Path) -> bool:
    """A file or a link (even a dangling one) is at ``path``."""
    return path.exists() or path.is_symlink()


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def node_memory_mb() -> int:
    """The memory slurmd will report for this machine (``slurmd -C``), in MB."""
    out = subprocess.run(
        [which("slurmd") or "slurmd", "-C"], capture_output=True, text=True, check=True
    ).stdout
    for field in out.split():
        if field.startswith("RealMemory="):
            return int(field.split("=", 1)[1])
    raise RuntimeError(f"slurmd -C did not report RealMemory:\n{out}")


def slurm_conf(root: Path, cpus: int, memory_mb: int, ctld_port: int, slurmd_port: int) -> str:
    """``slurm.conf`` for one node ``localhost`` without accounting, cgroups or systemd."""
    return f"""\
# Single-node test cluster written by tests/workflow/slurm_cluster.py; deleted when the test ends.
ClusterName=recurtest
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig={root}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SlurmdParameters=config_overrides
ReturnToService=2
# Finished jobs stay visible to squeue this long: the workflow's status command.
MinJobAge=7200
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


class LocalSlurm:
    """Start, query and stop a single-node SLURM cluster (munged, slurmctld, slurmd).

    Use as a context manager; ``env`` is the environment (``SLURM_CONF`` set) in which SLURM
    commands, and workflows that call them, reach this cluster.
    """

    def __init__(self, cpus: int | None = None, memory_mb: int | None = None) -> None:
        self.cpus = cpus or os.cpu_count() or 1
        self.memory_mb = memory_mb or max(1000, node_memory_mb() - 500)
        self.root = Path(tempfile.mkdtemp(prefix=TMP_PREFIX))  # short: socket path < 108
        self.conf = self.root / "slurm.conf"
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._logs: list = []
        self._linked = False

    # ------------------------------------------------------------------ /etc/slurm/slurm.conf
    @staticmethod
    def _is_leftover_link(path: Path) -> bool:
        return path.is_symlink() and os.readlink(path).startswith(
            os.path.join(tempfile.gettempdir(), TMP_PREFIX)
        )

    def _link_system_conf(self) -> None:
        """Point /etc/slurm/slurm.conf at this cluster's file, moving an existing one aside."""
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        if self._is_leftover_link(SYSTEM_CONF):
            SYSTEM_CONF.unlink()  # a crashed run's link; the backup (if any) is the original
        elif _present(SYSTEM_CONF):
            if _present(SYSTEM_CONF_BACKUP):
                raise RuntimeError(
                    f"both {SYSTEM_CONF} and {SYSTEM_CONF_BACKUP} exist; "
                    "restore one by hand before running the SLURM test"
                )
            SYSTEM_CONF.rename(SYSTEM_CONF_BACKUP)
        SYSTEM_CONF.symlink_to(self.conf)
        self._linked = True

    def _restore_system_conf(self) -> None:
        """Remove the link and put back the file that was there before (if any)."""
        if not self._linked:
            return
        if SYSTEM_CONF.is_symlink() and os.readlink(SYSTEM_CONF) == str(self.conf):
            SYSTEM_CONF.unlink()
        if _present(SYSTEM_CONF_BACKUP) and not _present(SYSTEM_CONF):
            SYSTEM_CONF_BACKUP.rename(SYSTEM_CONF)
        self._linked = False

    # ------------------------------------------------------------------ environment
    @property
    def env(self) -> dict[str, str]:
        """``os.environ`` plus ``SLURM_CONF`` (and the sbin directories on PATH)."""
        path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN])
        return {**os.environ, "SLURM_CONF": str(self.conf), "PATH": path}

    def run(self, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a SLURM client command against this cluster."""
        return subprocess.run(
            list(cmd), env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    # ------------------------------------------------------------------ life cycle
    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / f"{name}.out", "wb")  # noqa: SIM115 (closed in stop())
        self._logs.append(log)
        proc = subprocess.Popen(
            cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        self.procs.append((name, proc))

    def _wait(self, what: str, ok: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited ({proc.returncode}) while waiting for {what}:\n"
                        + self.diagnostics()
                    )
            if ok():
                return
            time.sleep(0.5)
        raise RuntimeError(
            f"timed out after {timeout:.0f}s waiting for {what}:\n" + self.diagnostics()
        )

    def start(self, timeout: float = 60) -> LocalSlurm:
        """Write the configuration, start the three daemons, wait for the node to be idle."""
        for sub in ("munge", "state", "spool"):
            (self.root / sub).mkdir(mode=0o755 if sub == "munge" else 0o700)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        (self.root / "plugstack.conf").write_text("")
        self.conf.write_text(
            slurm_conf(self.root, self.cpus, self.memory_mb, free_port(), free_port())
        )
        self._link_system_conf()
        sock = self.root / "munge" / "munge.socket"
        self._spawn(
            "munged",
            [
                which("munged") or "munged",
                "--foreground",
                "--force",
                f"--socket={sock}",
                f"--key-file={key}",
                f"--pid-file={self.root / 'munge' / 'munged.pid'}",
                f"--log-file={self.root / 'munge' / 'munged.log'}",
                f"--seed-file={self.root / 'munge' / 'munged.seed'}",
            ],
        )
        self._wait("munged's socket", sock.exists, timeout)
        self._spawn(
            "slurmctld", [which("slurmctld") or "slurmctld", "-D", "-i", "-f", str(self.conf)]
        )
        self._wait("slurmctld", lambda: self.run("scontrol", "ping").returncode == 0, timeout)
        self._spawn(
            "slurmd", [which("slurmd") or "slurmd", "-D", "-N", "localhost", "-f", str(self.conf)]
        )
        self._wait("node localhost idle", lambda: self.node_state() == "idle", timeout)
        return self

    def node_state(self) -> str:
        """The state ``sinfo`` shows for node localhost (e.g. idle, mixed, down*)."""
        res = self.run("sinfo", "--noheader", "--nodes=localhost", "--format=%T")
        return res.stdout.strip() if res.returncode == 0 else ""

    def diagnostics(self) -> str:
        """The tails of the daemons' logs, for failure messages."""
        parts = []
        for name in (
            "munged.out",
            "munge/munged.log",
            "slurmctld.out",
            "slurmctld.log",
            "slurmd.out",
            "slurmd.log",
        ):
            p = self.root / name
            if p.exists():
                parts.append(f"--- {name}\n{p.read_text(errors='replace')[-2500:]}")
        return "\n".join(parts)

    def cancel_all_jobs(self, timeout: float = 30) -> None:
        """Cancel every job of this (private) cluster and wait until none is running."""
        ids = self.run("squeue", "--noheader", "--format=%i").stdout.split()
        if not ids:
            return
        self.run("scancel", *ids)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.run("squeue", "--noheader", "--format=%i").stdout.split():
                return
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop the daemons this object started (slurmd, slurmctld, munged) and clean up.

        Jobs still running are cancelled first, so no job step outlives the cluster.
        """
        if any(name == "slurmctld" and proc.poll() is None for name, proc in self.procs):
            # Stopping the daemons matters more than a clean cancel.
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                self.cancel_all_jobs()
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        self.procs.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()
        self._restore_system_conf()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalSlurm:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
