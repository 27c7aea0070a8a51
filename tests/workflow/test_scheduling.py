"""The Snakemake re-evaluation workaround (recur._snakemake.scheduling): one pending timer at a
time."""

from __future__ import annotations

import threading
import time

from recur._snakemake.scheduling import coalesce_reevaluations, coalesced_reevaluation


class _FakeScheduler:
    def __init__(self):
        self._open_jobs = threading.Semaphore(0)
        self.timers = 0

    def _schedule_reevalutation(self, delay):  # Snakemake's behaviour: one timer per call
        self.timers += 1
        threading.Timer(delay, self._open_jobs.release).start()


def _releases(sem: threading.Semaphore) -> int:
    n = 0
    while sem.acquire(blocking=False):
        n += 1
    return n


def test_many_requests_while_one_is_pending_give_one_release():
    s = _FakeScheduler()
    started = [coalesced_reevaluation(s, 0.05) for _ in range(50)]
    assert started == [True] + [False] * 49
    time.sleep(0.3)
    assert _releases(s._open_jobs) == 1
    # once it has fired, the next request starts a new timer
    assert coalesced_reevaluation(s, 0.01) is True
    time.sleep(0.2)
    assert _releases(s._open_jobs) == 1


def test_patch_replaces_the_method_once_and_timers_are_daemons():
    cls = type("Sched", (_FakeScheduler,), {})
    assert coalesce_reevaluations(cls) is True
    assert coalesce_reevaluations(cls) is False  # already patched
    s = cls()
    before = {t.ident for t in threading.enumerate()}
    for _ in range(20):
        s._schedule_reevalutation(0.05)
    new = [t for t in threading.enumerate() if t.ident not in before]
    assert len(new) == 1
    assert new[0].daemon
    assert s.timers == 0  # the original method was not called
    time.sleep(0.3)
    assert _releases(s._open_jobs) == 1


def test_patch_leaves_an_unexpected_method_alone():
    class Other:
        def _schedule_reevalutation(self, delay, extra):
            return "original"

    assert coalesce_reevaluations(Other) is False
    assert Other()._schedule_reevalutation(1, 2) == "original"
    assert coalesce_reevaluations(type("NoMethod", (), {})) is False


def test_the_installed_snakemake_scheduler_is_patched_by_the_workflow():
    from snakemake.scheduling.job_scheduler import JobScheduler

    coalesce_reevaluations(JobScheduler)  # what rules/common.smk does
    assert getattr(JobScheduler._schedule_reevalutation, "_recur_coalesced", False)
