"""Workers through `hpo proxy` (Optuna's gRPC storage proxy) with hpo's heartbeat (hpo.search.proxy).

The heartbeat through the proxy rests on Optuna's private BaseHeartbeat (optuna 5.1.0): the in-process tests
here fail when an upgrade changes what fail_stale_trials asks of it. The end-to-end test runs the proxy on a
throwaway PostgreSQL cluster (tests/test_postgres.py's fixture) and kills a worker mid-trial.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback, fail_stale_trials, get_storage
from optuna.trial import TrialState
from studyfiles import ROOT, assert_no_duplicate_baselines, count, hpo_command, load, wait_for, write_study
from test_postgres import postgres_url  # noqa: F401  (the module-scoped throwaway cluster)

from hpo.bench.big import dashboard_first_load
from hpo.bench.pgcluster import free_port
from hpo.cli import main
from hpo.errors import StudyError
from hpo.search.proxy import BEAT_KEY, ProxyStorage, parse_grpc_url
from hpo.search.storage import open_storage


@pytest.mark.parametrize("url, expected", [
    ("grpc://127.0.0.1:13001", ("127.0.0.1", 13001)),
    ("grpc://proxy.lan", ("proxy.lan", 13000)),
    ("grpc://[::1]:9000/", ("::1", 9000)),
])
def test_grpc_urls(url, expected):
    assert parse_grpc_url(url) == expected


@pytest.mark.parametrize("url", ["grpc://", "grpc://host:99999", "grpc://host:12/db", "grpc://host:port"])
def test_a_bad_grpc_url_is_one_line(url):
    with pytest.raises(StudyError, match="expected grpc://HOST:PORT"):
        parse_grpc_url(url)


def test_no_proxy_there_is_one_line(tiny_mnist, tmp_path, capfd):
    assert main(["study", str(write_study(tmp_path)), "--storage", f"grpc://127.0.0.1:{free_port()}"]) == 2
    err = capfd.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "no proxy listens on 127.0.0.1:" in lines[0], err
    assert "hpo proxy --storage" in lines[0], err


@pytest.fixture
def proxy(tmp_path):
    """Optuna's proxy server in this process, on a SQLite file."""
    rdb = open_storage(f"sqlite:///{tmp_path / 'p.db'}", heartbeat=False)
    port = free_port()
    server = optuna.storages._grpc.server.make_server(get_storage(rdb), "127.0.0.1", port)  # in-process: the test's own
    server.start()
    yield port
    server.stop(None)


def test_a_silent_trial_is_failed_and_retried_and_a_beating_one_is_left(proxy):
    """A trial with no heartbeat and one whose beat stopped are failed after the grace period (by this reader's
    clock) and re-enqueued with their parameters; a trial that keeps beating stays RUNNING."""
    storage = ProxyStorage(host="127.0.0.1", port=proxy, interval=1, grace=1,
                           callback=RetryHeartbeatStaleTrialCallback(max_retry=2))
    study = optuna.create_study(study_name="s", storage=storage)
    silent, stopped, alive = (study.ask() for _ in range(3))
    for t in (silent, stopped, alive):
        t.suggest_float("x", 0, 1)
    storage.record_heartbeat(stopped._trial_id)
    storage.record_heartbeat(alive._trial_id)
    fail_stale_trials(study)  # first look: nothing has been silent for a grace period yet
    assert {t.state for t in study.get_trials()} == {TrialState.RUNNING}
    time.sleep(0.6)
    storage.record_heartbeat(alive._trial_id)
    time.sleep(0.6)
    storage.record_heartbeat(alive._trial_id)
    fail_stale_trials(study)
    trials = study.get_trials()
    assert [t.state for t in trials[:3]] == [TrialState.FAIL, TrialState.FAIL, TrialState.RUNNING]
    retries = {t.system_attrs["failed_trial"]: t for t in trials[3:]}
    assert sorted(retries) == [silent.number, stopped.number]
    assert all(r.state == TrialState.WAITING for r in retries.values())
    assert retries[silent.number].params == trials[silent.number].params
    assert trials[alive.number].system_attrs[BEAT_KEY] > trials[stopped.number].system_attrs[BEAT_KEY]


def test_optuna_beats_through_the_proxy_while_a_trial_runs(proxy):
    """Study.optimize starts Optuna's heartbeat thread for this storage (a private protocol: this fails when an
    upgrade changes it)."""
    storage = ProxyStorage(host="127.0.0.1", port=proxy, interval=1, grace=3)
    study = optuna.create_study(study_name="beats", storage=storage)
    seen = []

    def objective(trial):
        time.sleep(1.5)
        seen.append(storage.get_trial(trial._trial_id).system_attrs.get(BEAT_KEY))
        return 0.0

    study.optimize(objective, n_trials=1)
    assert seen[0] is not None and seen[0] >= 2  # one beat at the start, another a second later
    assert study.trials[0].state == TrialState.COMPLETE


@pytest.fixture
def hpo_proxy(postgres_url):  # noqa: F811
    port = free_port()
    server = subprocess.Popen(hpo_command("proxy", "--storage", postgres_url, "--port", str(port)), cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert "storage proxy for" in server.stdout.readline()
        yield f"grpc://127.0.0.1:{port}"
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _running_after_a_finished_one(direct: str, name: str):
    try:
        trials = load(direct, name).get_trials(deepcopy=False)
    except KeyError:
        return None
    live = [t for t in trials if t.state == TrialState.RUNNING and "worker" in t.user_attrs]
    return live[0] if live and any(t.state == TrialState.COMPLETE for t in trials) else None


@pytest.mark.parametrize("pack", [1, 3], ids=["one-at-a-time", "packs-of-3"])
def test_a_worker_killed_behind_the_proxy_has_its_trial_retried(tiny_mnist, tmp_path, postgres_url, hpo_proxy,  # noqa: F811
                                                                 monkeypatch, pack):
    """--workers 2 through the proxy, one worker SIGKILLed mid-trial: its trial is failed through hpo's heartbeat
    and retried with the same parameters, and the run ends with exactly n_trials; export, report and the
    dashboard read the study through the proxy too."""
    monkeypatch.setenv("HPO_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("HPO_HEARTBEAT_GRACE", "2")
    name = f"tiny_proxy{pack}"  # one server for the module: each run its own study
    # Packs of 3: two workers take 6 trials at once, so a third pack is what runs after a finished one.
    n_trials = 6 if pack == 1 else 9
    study_file = str(write_study(tmp_path, name, n_trials=n_trials, epochs=15, pack=pack))
    parent = subprocess.Popen(hpo_command("study", study_file, "--storage", hpo_proxy, "--workers", "2"), cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    killed = {}

    def kill_mid_trial():
        running = _running_after_a_finished_one(postgres_url, name)
        if running is None:
            return None
        pid = int(running.user_attrs["worker"].rsplit(":", 1)[1])
        os.kill(pid, signal.SIGSTOP)  # frozen: it cannot finish the trial between this look and the kill
        mid = load(postgres_url, name).trials[running.number].state == TrialState.RUNNING
        os.kill(pid, signal.SIGKILL if mid else signal.SIGCONT)
        if mid:
            killed.update(number=running.number, pid=pid, params=running.params)
        return mid

    out = []
    reader = threading.Thread(target=lambda: out.append(parent.stdout.read()))
    reader.start()
    try:
        wait_for(kill_mid_trial, 90, "a trial to run")
        parent.wait(120)
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
            parent.wait()
        reader.join(10)
    assert parent.returncode == 0, out
    assert f"(pid {killed['pid']}) died: SIGKILL" in out[0], out
    study = load(postgres_url, name)
    assert study.trials[killed["number"]].state == TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed["number"]]
    assert len(retries) == 1 and retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert killed["params"].items() <= retries[0].params.items()
    assert count(study) == n_trials
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    assert_no_duplicate_baselines(study)

    assert main(["export", name, "--storage", hpo_proxy, "--out", str(tmp_path / "best.yaml")]) == 0
    assert (tmp_path / "best.yaml").is_file()
    assert main(["report", name, "--storage", hpo_proxy, "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "report.md").is_file()
    assert dashboard_first_load(hpo_proxy, study._study_id, dict(os.environ)) > 0  # its study API lists the trials
