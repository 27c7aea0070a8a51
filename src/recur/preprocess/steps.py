"""Per-time-point steps of a per-patient job (conversion, mask check, registration).

A patient's job runs one step per time point through a ``guard``. The default guard just runs
the step; the CLI's ``--on-failure exclude`` passes one that, on a refusal (or an exclusion
placeholder among the step's inputs), writes placeholders at its outputs and returns False
(:func:`recur.cohort.exclusions.run_or_exclude`); the job then abandons that time point's staged
files (:class:`Abandon`) and goes on with the other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

#: ``guard(stage, timepoint, step, inputs, outputs) -> bool``: runs ``step()`` of one time point
#: and returns True when it ran, False when the guard handled a refusal.
Guard = Callable[[str, str, Callable[[], object], Sequence[Path], Sequence[Path]], bool]


def run_step(
    stage: str,
    timepoint: str,
    step: Callable[[], object],
    inputs: Sequence[Path],
    outputs: Sequence[Path],
) -> bool:
    """The default :data:`Guard`: run the step (a refusal propagates)."""
    step()
    return True


class Abandon(Exception):
    """A guard handled a refusal: drop the time point's staged files (placeholders stay)."""
