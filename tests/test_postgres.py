"""Workers on PostgreSQL: processes started independently with `hpo study NAME --storage postgresql://...`
join one study, as workers on several machines do, and together run exactly n_trials.

The test starts its own throwaway cluster (hpo.bench.pgcluster: Debian's postgresql, which .ci/run installs) on
a free loopback port, with trust authentication on loopback only, and stops it at the end. It is skipped, saying why,
only where no server can be started.
"""

from __future__ import annotations

import subprocess

import pytest
from studyfiles import ROOT, assert_no_duplicate_baselines, count, hpo_command, load, write_study

from hpo.bench.pgcluster import Cluster, NoCluster, free_port
from hpo.cli import main
from hpo.trials import study_attrs


@pytest.fixture(scope="module")
def postgres_url():
    try:
        cluster = Cluster().__enter__()
    except NoCluster as e:
        pytest.skip(str(e))
    try:
        yield cluster.database("hpo")
    finally:
        cluster.stop()


@pytest.mark.parametrize("pack", [1, 3], ids=["one-at-a-time", "packs-of-3"])
def test_workers_started_separately_share_one_study(tiny_mnist, tmp_path, postgres_url, pack):
    """Two workers started at the same moment on an empty database, as a job array would: one creates the
    study and enqueues the paper's baselines, the other joins it, and together they run exactly n_trials
    (also when each trains its trials in packs)."""
    name = f"tiny_pack{pack}"  # one server for the module: each run its own study
    study_file = str(write_study(tmp_path, name, n_trials=8, epochs=10))
    command = hpo_command("study", study_file, "--storage", postgres_url, "--pack", str(pack))
    workers = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    try:
        outs = [w.communicate(timeout=150) for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    for w, (_, err) in zip(workers, outs):
        assert w.returncode == 0, err
    outs = [" ".join(out.split()) for out, _ in outs]  # rich wraps long lines
    assert sorted("created; 3 paper baselines enqueued" in out for out in outs) == [False, True]
    assert sorted("resuming with" in out for out in outs) == [False, True]
    assert f"dashboard --storage {postgres_url}`" in outs[0]  # `hpo ...` or `.venv/bin/hpo ...`, as run

    study = load(postgres_url, name)
    assert count(study) == 8
    assert_no_duplicate_baselines(study)
    pids = {t.user_attrs["worker"].rsplit(":", 1)[1] for t in study.trials if "worker" in t.user_attrs}
    assert pids == {str(w.pid) for w in workers}  # both trained
    assert study_attrs(study)["split"]["n_train"] == 500


def test_an_unreachable_server_is_one_line(tiny_mnist, tmp_path, capfd):
    url = f"postgresql://hpo:secret@127.0.0.1:{free_port()}/hpo"
    assert main(["study", str(write_study(tmp_path)), "--storage", url]) == 2
    err = capfd.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hpo: error: cannot open storage postgresql://hpo:***@127.0.0.1:")
    assert "secret" not in err
