"""A workaround for Snakemake's re-evaluation timers, applied by ``rules/common.smk``.

Snakemake's job scheduler (``snakemake.scheduling.job_scheduler.JobScheduler``, 9.x) runs a
scheduling round whenever its semaphore is released: once per finished job and, because the
default ``--max-jobs-per-timespan 100/1s`` creates a job-rate limiter, once more by a
``threading.Timer`` that *every* round starts (``_schedule_reevalutation``). A round that
finds ready jobs therefore always leaves one timer behind, and every finished job adds one
more round: the timers never coalesce. While jobs wait for a core (hundreds of per-patient
jobs during preprocessing) their number grows with each finished job, to ~100-180 live timer
threads and as many rounds per second in the default study, each round re-statting the
inputs of the ready jobs (``update_input_sizes``). The Snakemake process then took 39 % of one
core of a 2-core machine, rising as the run went on (upstream: snakemake/snakemake#3804, a
run that exhausted its threads; #200, rounds without free cores).

:func:`coalesce_reevaluations` replaces that method by one that keeps **at most one pending
re-evaluation** per scheduler: a round asked for while one is pending is already covered by
it, since any round looks at every ready job and the rate limiter's whole window. The timer
is a daemon thread, so the process does not wait for it at exit. Nothing else of Snakemake's
scheduling changes; the patch is applied only where the method exists with the expected
signature, and the version it was written for is recorded in :data:`WRITTEN_FOR`.
"""

from __future__ import annotations

import inspect
import threading

#: The Snakemake version the workaround was written against (requirements/lock.txt).
WRITTEN_FOR = "9.27.1"

_MARK = "_recur_coalesced"


def coalesced_reevaluation(scheduler, delay: float) -> bool:
    """Schedule one release of ``scheduler._open_jobs`` after ``delay`` seconds unless one is
    already pending. Returns whether a timer was started."""
    lock = scheduler.__dict__.setdefault("_recur_reevaluation_lock", threading.Lock())
    with lock:
        if scheduler.__dict__.get("_recur_reevaluation_pending"):
            return False
        scheduler._recur_reevaluation_pending = True

    def fire() -> None:
        with lock:
            scheduler._recur_reevaluation_pending = False
        scheduler._open_jobs.release()

    timer = threading.Timer(delay, fire)
    timer.daemon = True
    timer.start()
    return True


def coalesce_reevaluations(scheduler_class) -> bool:
    """Patch ``scheduler_class._schedule_reevalutation`` (Snakemake's spelling) to
    :func:`coalesced_reevaluation`. Returns whether it was patched (False if already done or
    the method is missing or has another signature)."""
    original = getattr(scheduler_class, "_schedule_reevalutation", None)
    if original is None or getattr(original, _MARK, False):
        return False
    if list(inspect.signature(original).parameters) != ["self", "delay"]:
        return False

    def _schedule_reevalutation(self, delay) -> None:
        coalesced_reevaluation(self, delay)

    setattr(_schedule_reevalutation, _MARK, True)
    _schedule_reevalutation.__doc__ = coalesced_reevaluation.__doc__
    scheduler_class._schedule_reevalutation = _schedule_reevalutation
    return True
