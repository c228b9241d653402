"""The statistics behind the numbers shown: mean and spread over runs, and where one more run would fall.

Kept apart from hpo.display, which every command imports: scipy.stats takes about a second to import, and only
the commands that compare runs (compare, report, activations, bench) need it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from scipy.stats import t as student_t

from hpo.display import MIN_SPREAD_N, pm


def mean_sd(xs: Sequence[float], one: float = 0.0) -> tuple[float, float]:
    """Mean and sample standard deviation; the deviation of a single value is `one` (0.0, or NaN where a
    table must show that there is no spread)."""
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else one)


def pm_of(xs: Sequence[float], digits: int = 0, scale: float = 1.0) -> str:
    """`mean ± std` of a list of measurements (benchmarks: throughputs, rates)."""
    return pm(*mean_sd(xs), digits=digits, scale=scale)


def t975(df: int) -> float:
    """Student's t, 97.5% quantile, for `df` degrees of freedom."""
    return float(student_t.ppf(0.975, df))


def prediction_interval(mean: float, std: float, n: int) -> tuple[float, float] | None:
    """Where one more run falls with 95% probability, from n runs (t-based: mean ± t·std·√(1 + 1/n)); None
    below MIN_SPREAD_N runs. This, not the interval of the mean, is the test for "could one run of this
    configuration have reached that number?"."""
    if n < MIN_SPREAD_N:
        return None
    half = t975(n - 1) * std * math.sqrt(1 + 1 / n)
    return mean - half, mean + half
