"""The load test at its smallest (hpo.bench.load; `make load` runs the large settings): 8 worker processes
through `hpo proxy` on a throwaway PostgreSQL cluster, one SIGKILLed mid-trial; nothing is lost."""

from __future__ import annotations

import pytest
from studyfiles import write_study

from hpo.bench.load import Setting, run_setting, table
from hpo.bench.pgcluster import Cluster, NoCluster


def test_eight_workers_through_the_proxy_with_one_killed(tiny_mnist, tmp_path):
    try:
        cluster = Cluster().__enter__()
    except NoCluster as e:
        pytest.skip(str(e))
    try:
        study = write_study(tmp_path, "tiny", n_trials=4, epochs=1)  # --smoke: 2 paper baselines
        r = run_setting(cluster, Setting("proxy", workers=8, trials=80, kills=1), tmp_path, log=lambda _: None,
                        timeout=400, study_path=study)  # a bound for a machine busy with other work
    finally:
        cluster.stop()
    assert len(r.killed) == 1 and r.states["FAIL"] >= 1  # one worker killed mid-trial, its trial failed
    assert r.total == 80 and r.left_running == 0 and r.duplicated == 0
    assert sorted(r.baselines.values()) == [1, 1], r.baselines  # each paper configuration run once
    assert not r.lost
    assert 0 < r.peak_connections <= 16 + 2, r.peak_connections  # the proxy's pool, not one per worker
    assert r.exit_codes.count(-9) == 1 and r.exit_codes.count(0) == 7, r.exit_codes
    assert "| hpo proxy | 8 | 80 | 1 |" in table([r])
