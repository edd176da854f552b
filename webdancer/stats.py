"""Confidence intervals for evaluation scores: a percentile bootstrap over questions.

Questions are the unit that varies between benchmarks of the same kind, so resampling them says how
far a score would move on another draw of questions; the k runs of one question stay together. The
resampling is seeded, so the same results give the same interval on every machine.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

RESAMPLES = 2000
LEVEL = 0.95


def bootstrap_ci(values: list[float], resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0) -> tuple[float, float]:
    """The `level` percentile-bootstrap interval of the mean of `values` ((0, 0) when there are none)."""
    if not values:
        return (0.0, 0.0)
    n = len(values)
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    tail = (1.0 - level) / 2
    return (means[int(tail * (resamples - 1))], means[int(round((1.0 - tail) * (resamples - 1)))])


@dataclass
class PairedDifference:
    """B minus A on the questions both runs answered: the mean difference and its bootstrap interval."""

    questions: int
    mean: float
    low: float
    high: float

    @property
    def distinguishable(self) -> bool:
        """False when the interval holds 0: the two runs cannot be told apart on these questions."""
        return self.questions > 0 and (self.low > 0 or self.high < 0)


def paired_difference(a: dict[str, float], b: dict[str, float], seed: int = 0) -> PairedDifference:
    """B - A per question, over the questions in both (a question's runs differ less than two questions do)."""
    shared = sorted(set(a) & set(b))
    diffs = [b[q] - a[q] for q in shared]
    low, high = bootstrap_ci(diffs, seed=seed)
    return PairedDifference(len(shared), sum(diffs) / len(diffs) if diffs else 0.0, low, high)
