"""hpo.stats: mean and spread, Student's t quantiles, the prediction interval for one more run."""

from __future__ import annotations

import math

import pytest

from hpo.stats import mean_sd, pm_of, prediction_interval, t975


@pytest.mark.parametrize(("df", "quantile"), [(1, 12.7062), (2, 4.3027), (10, 2.2281), (30, 2.0423), (120, 1.9799)])
def test_t975_is_students_975_percent_quantile(df, quantile):
    assert t975(df) == pytest.approx(quantile, abs=1e-4)


def test_mean_sd_is_the_sample_deviation_and_names_what_one_value_has():
    assert mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_sd([5.0]) == (5.0, 0.0)
    assert math.isnan(mean_sd([5.0], one=float("nan"))[1])
    assert pm_of([1000.0, 3000.0]) == "2,000 ± 1,414"


def test_the_prediction_interval_widens_the_std_by_t_and_one_more_run():
    lo, hi = prediction_interval(0.882, 0.002, 3)
    half = 4.302653 * 0.002 * math.sqrt(4 / 3)
    assert (lo, hi) == pytest.approx((0.882 - half, 0.882 + half), abs=1e-9)
    assert prediction_interval(0.882, 0.002, 2) is None
