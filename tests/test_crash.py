"""Crash safety: a worker killed with SIGKILL in the middle of a trial.

Its trial is marked FAIL by the heartbeat (shortened here through HPO_HEARTBEAT_*) and retried with the
same parameters, the trials that finished stay as they were, and the study still ends at exactly n_trials.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
from contextlib import closing

import pytest
from optuna.trial import TrialState
from studyfiles import ROOT, assert_no_duplicate_baselines, count, hpo_command, load, run_hpo, wait_for, write_study

# Long enough per trial (tens of epochs on the tiny data) that a poll sees it running before it ends.
EPOCHS = 15


@pytest.fixture
def short_heartbeat(monkeypatch):
    monkeypatch.setenv("HPO_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("HPO_HEARTBEAT_GRACE", "2")


def _finished_and_running(url: str, finished: int = 1, running: int = 1):
    """(finished trials, running trials) once at least `finished` trials have finished and `running` run."""
    try:
        study = load(url)
    except KeyError:
        return None
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    live = [t for t in trials if t.state == TrialState.RUNNING and t.params]
    return (done, live) if len(done) >= finished and len(live) >= running else None


def _one_running_after_a_finished_one(url: str):
    """(finished trials, [a running trial]) once at least one trial has finished and another is running."""
    got = _finished_and_running(url)
    return (got[0], got[1][:1]) if got else None


def _worker_pid(trial) -> int:
    return int(trial.user_attrs["worker"].rsplit(":", 1)[1])


def _killed_mid_trial(url: str, ready, pid_of):
    """A wait_for condition: once `ready()` returns (finished, running), SIGKILL worker `pid_of(running)` only
    while every one of `running` is still RUNNING in the storage, and return what `ready()` returned.

    The worker is frozen (SIGSTOP) before the look, so it cannot finish a trial between the look and the kill;
    if one had already finished, it is let go on (SIGCONT) and None says to look again. The look is a plain
    read-only query: hpo's storage begins every transaction with the write lock (BEGIN IMMEDIATE), which the
    frozen worker may hold, while a reader of the WAL-mode file never waits for it.
    """
    got = ready()
    if not got:
        return None
    pid = pid_of(got[1])
    os.kill(pid, signal.SIGSTOP)
    ids = [t._trial_id for t in got[1]]
    with closing(sqlite3.connect(f"file:{url.removeprefix('sqlite:///')}?mode=ro", uri=True)) as db:
        states = db.execute(f"SELECT state FROM trials WHERE trial_id IN ({','.join('?' * len(ids))})", ids)
        mid = [state for (state,) in states] == ["RUNNING"] * len(ids)
    os.kill(pid, signal.SIGKILL if mid else signal.SIGCONT)
    return got if mid else None


def _kill_worker_when(study_file: str, url: str, ready, what: str):
    """Run `hpo study FILE` in a process and SIGKILL it as soon as `ready()` returns (finished, running) with
    the running trials still unfinished; return that."""
    worker = subprocess.Popen(hpo_command("study", study_file), cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        got = wait_for(lambda: _killed_mid_trial(url, ready, lambda _: worker.pid), 90, what)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == -signal.SIGKILL
    return got


def _check_retried(url: str, killed, finished_before) -> None:
    study = load(url)
    assert study.trials[killed.number].state == TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1
    assert retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert killed.params.items() <= retries[0].params.items()  # the same configuration, tried again
    assert retries[0].user_attrs.get("baseline") == killed.user_attrs.get("baseline")
    for t in finished_before:  # kept exactly as they were
        kept = study.trials[t.number]
        assert (kept.state, kept.values, kept.datetime_complete) == (t.state, t.values, t.datetime_complete)
    assert count(study) == 4
    assert_no_duplicate_baselines(study)


def test_a_killed_worker_trial_is_failed_and_retried_when_the_study_is_rerun(tiny_mnist, tmp_path, short_heartbeat):
    url = os.environ["HPO_STORAGE"]
    study_file = str(write_study(tmp_path, n_trials=4, epochs=EPOCHS))
    finished, running = _kill_worker_when(study_file, url, lambda: _finished_and_running(url), "a trial to run")
    killed = load(url).trials[running[0].number]
    assert killed.state == TrialState.RUNNING  # killed mid-trial: nobody told the storage
    assert count(load(url)) < 4

    rerun = run_hpo("study", study_file, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming with" in rerun.stdout
    _check_retried(url, killed, [load(url).trials[t.number] for t in finished])


def test_a_parallel_run_retries_a_killed_worker_trial_itself(tiny_mnist, tmp_path, short_heartbeat):
    """--workers 2, one worker killed: the parent says so, the other worker retries the trial once its
    heartbeat has gone stale, and the same run ends with exactly n_trials."""
    url = os.environ["HPO_STORAGE"]
    study_file = str(write_study(tmp_path, n_trials=4, epochs=EPOCHS))
    parent = subprocess.Popen(hpo_command("study", study_file, "--workers", "2"), cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        ready = lambda: _one_running_after_a_finished_one(url)  # noqa: E731
        finished, (running,) = wait_for(lambda: _killed_mid_trial(url, ready, lambda live: _worker_pid(live[0])),
                                        90, "a trial to run")
        finished = [load(url).trials[t.number] for t in finished]
        out, _ = parent.communicate(timeout=120)
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
            parent.wait()
    assert parent.returncode == 0, out
    assert re.search(rf"worker w\d \(pid {_worker_pid(running)}\) died: SIGKILL", out), out
    _check_retried(url, load(url).trials[running.number], finished)


def test_a_worker_killed_mid_pack_leaves_every_member_to_be_failed_and_retried(tiny_mnist, tmp_path, short_heartbeat):
    """budget.pack 3: the second pack is killed while it trains; each of its three members is failed by the
    heartbeat and retried once with its own parameters, and the study ends at exactly n_trials."""
    url = os.environ["HPO_STORAGE"]
    study_file = str(write_study(tmp_path, n_trials=6, epochs=EPOCHS, pack=3))

    finished, running = _kill_worker_when(study_file, url, lambda: _finished_and_running(url, 3, 3),
                                          "the second pack to train")
    assert {load(url).trials[t.number].state for t in running} == {TrialState.RUNNING}
    rerun = run_hpo("study", study_file, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    study = load(url)
    for killed in running:
        assert study.trials[killed.number].state == TrialState.FAIL
        retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed.number]
        assert len(retries) == 1 and retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
        assert killed.params.items() <= retries[0].params.items()
    for t in finished:
        kept = study.trials[t.number]
        assert (kept.state, kept.values) == (t.state, t.values)
    assert count(study) == 6
    assert_no_duplicate_baselines(study)
