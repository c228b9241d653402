"""hpo.search.workers and the storage wiring it relies on: N processes on one study, exactly n_trials,
no duplicated baselines, no 'database is locked', Ctrl-C stops them all."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
import time

import optuna
import pytest
import torch
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from studyfiles import ROOT, assert_no_duplicate_baselines, count, hpo_command, load, run_hpo, wait_for, write_study

from hpo.cli import main
from hpo.errors import HpoError, StudyError
from hpo.search.budget import BudgetStudy, SurplusTrial
from hpo.search.storage import heartbeat_settings, open_storage
from hpo.search.workers import threads_per_worker
from hpo.training.runtime import set_threads
from hpo.trials import COUNTED, study_attrs


@pytest.mark.parametrize("threads, workers, expected", [(8, 2, 4), (2, 2, 1), (3, 2, 1), (2, 4, 1), (4, 1, 4)])
def test_threads_are_split_between_workers(threads, workers, expected):
    assert threads_per_worker(threads, workers) == expected


def test_heartbeat_settings_come_from_the_environment(monkeypatch):
    assert heartbeat_settings() == (10, 30)
    monkeypatch.setenv("HPO_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("HPO_HEARTBEAT_GRACE", "3")
    assert heartbeat_settings() == (1, 3)
    monkeypatch.setenv("HPO_HEARTBEAT_GRACE", "1")
    with pytest.raises(StudyError, match="must exceed HPO_HEARTBEAT_INTERVAL"):
        heartbeat_settings()
    monkeypatch.setenv("HPO_HEARTBEAT_GRACE", "soon")
    with pytest.raises(StudyError, match="HPO_HEARTBEAT_GRACE: expected a positive whole number"):
        heartbeat_settings()


def test_hpo_max_threads_caps_what_a_study_asks_for(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("HPO_MAX_THREADS", "1")
        set_threads(2)
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        set_threads(None)  # `hpo train` without --threads: torch's own count, capped too
        assert torch.get_num_threads() == 1
        monkeypatch.delenv("HPO_MAX_THREADS")
        set_threads(2)
        assert torch.get_num_threads() == 2
        monkeypatch.setenv("HPO_MAX_THREADS", "two")
        for asked in (2, None):
            with pytest.raises(HpoError, match="HPO_MAX_THREADS: expected a positive whole number of threads, but "
                                               "got 'two'"):
                set_threads(asked)
    finally:
        torch.set_num_threads(before)


def test_a_bad_hpo_max_threads_is_one_line_before_any_command_runs(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("HPO_MAX_THREADS", "0")
    assert main(["train", str(ROOT / "docs" / "relu3_adam_hand.yaml"), "--json", str(tmp_path / "t.json")]) == 2
    out = capsys.readouterr()
    assert out.out == ""  # nothing loaded, trained or printed first
    assert out.err.strip().splitlines() == [
        "hpo: error: HPO_MAX_THREADS: expected a positive whole number of threads, but got '0'"]
    assert not (tmp_path / "t.json").exists()


def test_sqlite_storage_uses_wal(tmp_path):
    path = tmp_path / "s.db"
    optuna.create_study(study_name="s", storage=open_storage(f"sqlite:///{path}"))
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_commit_does_not_wait_for_the_disk_in_wal_mode(tmp_path):
    """synchronous=NORMAL on hpo's own connections (SQLite's default, FULL, syncs the disk at every commit)."""
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    with storage.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert c.exec_driver_sql("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def _slow_objective(trial):
    time.sleep(0.02)
    return trial.suggest_float("x", 0, 1)


def test_budget_is_exact_with_concurrent_workers(tmp_path):
    """Four threads with separate storages (separate connections, as processes have) on one SQLite file:
    exactly n counted trials, where MaxTrialsCallback would overshoot by up to three."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    optuna.create_study(study_name="s", storage=open_storage(url))

    def worker():
        BudgetStudy("s", open_storage(url), 10).run(_slow_objective, max_trials=10)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    study = optuna.load_study(study_name="s", storage=url)
    assert count(study) == 10
    for t in study.get_trials(states=(TrialState.FAIL,)):  # only a race may leave one, and it says why
        assert t.user_attrs["outcome"] == "surplus"
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))


@pytest.mark.parametrize("other_ends_as, runs_here", [(TrialState.COMPLETE, 0), (TrialState.FAIL, 1)])
def test_a_full_study_waits_for_running_trials_before_it_ends(tmp_path, other_ends_as, runs_here):
    """While the only slot is held by another worker's running trial, no trial is created: this worker waits;
    if that trial completes, the run ends; if it fails (its slot is free again), this worker runs one."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    other = optuna.create_study(study_name="s", storage=open_storage(url, heartbeat=False))
    held = other.ask()
    calls, waits = [], []

    def other_ends_once_this_worker_waits(running):  # not a timer: a slow start cannot let it end first
        waits.append(running)
        other.tell(held, 0.5 if other_ends_as == TrialState.COMPLETE else None, state=other_ends_as)

    study = BudgetStudy("s", open_storage(url, heartbeat=False), 1, on_wait=other_ends_once_this_worker_waits)
    study.poll_seconds = 0.05
    study.run(lambda t: calls.append(t.number) or 1.0, max_trials=5)
    assert waits == [1]
    assert len(calls) == runs_here and len(study.trials) == 1 + runs_here
    assert count(study) == 1


def test_a_retry_enqueued_after_its_slot_was_taken_is_run_and_the_fresh_trial_gives_way(tmp_path):
    """A killed worker's trial is failed (its slot freed) a moment before its retry is enqueued; a fresh trial
    that took the slot in between must not run beside the retry (n_trials + 1 counted), nor leave it WAITING:
    the waiting retry holds a slot and is run, and the fresh trial, started after it, ends `surplus`."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    other = optuna.create_study(study_name="s", storage=open_storage(url, heartbeat=False))
    study = BudgetStudy("s", open_storage(url, heartbeat=False), 2)
    other.tell(other.ask(), 1.0)
    killed = other.ask()
    killed.suggest_float("x", 0, 1)
    other.tell(killed, state=TrialState.FAIL)  # the heartbeat failed it: one slot free
    fresh = study.ask()  # takes the freed slot before the retry exists
    other.enqueue_trial(killed.params)  # the retry, a moment late
    with pytest.raises(SurplusTrial):
        study.check_surplus(fresh)
    study.tell(fresh, state=TrialState.FAIL)
    calls = []
    study.run(lambda t: calls.append(t.suggest_float("x", 0, 1)) or 1.0, max_trials=5)
    assert calls == [killed.params["x"]]  # the retry ran, with the killed trial's parameters
    assert count(study) == 2
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))


def test_two_retries_of_a_killed_pack_do_not_give_way_to_each_other(tmp_path):
    """A worker killed while it held a pack of two leaves two retries WAITING at once, and a fresh trial may
    have taken one of the freed slots before they were enqueued (it is doomed: it will end `surplus`). The
    first retry to start, while that fresh trial still runs, must not count the second retry as ahead of it:
    it would end `surplus` too, its configuration never run, and the study one trial short."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    other = optuna.create_study(study_name="s", storage=open_storage(url, heartbeat=False))
    study = BudgetStudy("s", open_storage(url, heartbeat=False), 3)
    other.tell(other.ask(), 1.0)
    members = [other.ask() for _ in range(2)]
    for m in members:
        m.suggest_float("x", 0, 1)
        other.tell(m, state=TrialState.FAIL)  # the heartbeat failed both members: two slots free
    fresh = other.ask()  # another worker's fresh trial takes a freed slot before the retries exist
    retry = RetryHeartbeatStaleTrialCallback(max_retry=2)  # what the storage's heartbeat calls
    for m in members:
        retry(other, other.trials[m.number])  # the retries, WAITING together
    first = study.ask()  # the first retry, while the fresh trial is still running
    assert first.suggest_float("x", 0, 1) == members[0].params["x"]
    study.check_surplus(first)  # runs: only the counted trial and the running fresh one are ahead
    with pytest.raises(SurplusTrial):
        study.check_surplus(fresh)  # the fresh trial gives way to the retries
    other.tell(fresh, state=TrialState.FAIL)
    study.tell(first, 1.0)
    calls = []
    study.run(lambda t: calls.append(t.suggest_float("x", 0, 1)) or 1.0, max_trials=5)
    assert calls == [members[1].params["x"]]  # the second retry ran too
    assert count(study) == 3


def test_a_trial_left_running_without_any_heartbeat_is_failed_and_retried(tmp_path, monkeypatch):
    """A worker killed before its trial's first heartbeat leaves it RUNNING for good (Optuna only fails stale
    heartbeats). A worker waiting for the slot fails it after the grace period, and retries it."""
    monkeypatch.setenv("HPO_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("HPO_HEARTBEAT_GRACE", "2")
    url = f"sqlite:///{tmp_path / 's.db'}"
    other = optuna.create_study(study_name="s", storage=open_storage(url, heartbeat=False))
    other.enqueue_trial({"x": 0.25})
    killed = other.ask()  # popped, never told, never a heartbeat: its worker died right away
    assert killed.suggest_float("x", 0, 1) == 0.25
    calls = []
    study = BudgetStudy("s", open_storage(url), 1)
    study.poll_seconds = 0.1
    study.run(lambda t: calls.append(t.suggest_float("x", 0, 1)) or 1.0, max_trials=3)
    assert calls == [0.25]  # the same configuration, retried
    trials = optuna.load_study(study_name="s", storage=url).trials
    assert trials[killed.number].state == TrialState.FAIL
    assert trials[-1].system_attrs["failed_trial"] == killed.number and trials[-1].state == TrialState.COMPLETE
    assert count(study) == 1


def test_ctrl_c_inside_a_storage_write_leaves_no_trial_of_this_worker_running(tmp_path, monkeypatch):
    """A signal that lands inside tell's write escapes Optuna's handling and leaves the trial RUNNING; the
    stopping worker's fail_left_running marks it FAIL (outcome interrupted) and touches no other trial."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    other = optuna.create_study(study_name="s", storage=open_storage(url, heartbeat=False))
    others = other.ask()  # another worker's trial, still running
    study = BudgetStudy("s", open_storage(url, heartbeat=False), 5)
    write = study._storage.set_trial_state_values
    calls = []

    def interrupted_on_the_second_tell(trial_id, state, values=None):
        calls.append(trial_id)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return write(trial_id, state, values)

    monkeypatch.setattr(study._storage, "set_trial_state_values", interrupted_on_the_second_tell)
    with pytest.raises(KeyboardInterrupt):
        study.run(lambda t: 1.0, max_trials=5)
    monkeypatch.setattr(study._storage, "set_trial_state_values", write)
    states = [t.state for t in study.trials]
    assert states == [TrialState.RUNNING, TrialState.COMPLETE, TrialState.RUNNING]

    assert study.fail_left_running() == [2]
    trials = optuna.load_study(study_name="s", storage=url).trials
    assert [t.state for t in trials] == [TrialState.RUNNING, TrialState.COMPLETE, TrialState.FAIL]
    assert trials[2].user_attrs["outcome"] == "interrupted"
    assert trials[others.number].state == TrialState.RUNNING and study.fail_left_running() == []


def test_try_ask_takes_an_enqueued_trial_when_every_slot_is_held(tmp_path):
    """A pack's later members come from try_ask: in a study whose trials are all enqueued (bench item 5), every
    slot is held by a waiting trial, and those are what the pack must take (it took none: packs of one)."""
    url = f"sqlite:///{tmp_path / 'e.db'}"
    optuna.create_study(study_name="e", storage=open_storage(url, heartbeat=False))
    study = BudgetStudy("e", open_storage(url, heartbeat=False), 3)
    for lr in (0.1, 0.2, 0.3):
        study.enqueue_trial({"lr": lr})
    first, second = study.ask(), study.try_ask()
    assert second is not None
    assert [first.suggest_float("lr", 0, 1), second.suggest_float("lr", 0, 1)] == [0.1, 0.2]
    third = study.try_ask()
    assert third.suggest_float("lr", 0, 1) == 0.3 and study.try_ask() is None  # all three taken: no fourth


def test_a_trial_that_races_past_the_last_slot_is_not_run(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    other = optuna.create_study(study_name="s", storage=open_storage(url, heartbeat=False))
    first, second = other.ask(), other.ask()  # two workers asked at the same moment for the last slot
    calls = []
    guarded = BudgetStudy("s", open_storage(url, heartbeat=False), 1).guard(lambda t: calls.append(t.number) or 1.0)
    with pytest.raises(SurplusTrial, match="not run"):
        guarded(second)
    assert guarded(first) == 1.0 and calls == [first.number]
    attrs = optuna.load_study(study_name="s", storage=url).trials[second.number].user_attrs
    assert attrs["outcome"] == "surplus" and "taken by other workers" in attrs["reason"]


def test_bad_worker_count_is_one_line(tiny_mnist, tmp_path, capsys):
    assert main(["study", str(write_study(tmp_path)), "--workers", "0"]) == 2
    assert capsys.readouterr().err.strip() == "hpo: error: --workers: must be a positive number, but got 0"
    assert not load_or_none(os.environ["HPO_STORAGE"])


def load_or_none(url):
    try:
        return load(url)
    except KeyError:
        return None


def test_the_study_file_s_budget_workers_is_the_default_and_the_flag_overrides_it(tiny_mnist, tmp_path, capsys):
    url = os.environ["HPO_STORAGE"]
    study_file = str(write_study(tmp_path, n_trials=4, threads=2, workers=2, baselines=False))
    r = run_hpo("study", study_file, timeout=150)  # no --workers: budget.workers: 2
    assert r.returncode == 0, r.stderr
    assert "2 workers x 1 thread" in r.stdout and "1 threads" not in r.stdout
    assert len({t.user_attrs["worker"] for t in load(url).trials if t.state in COUNTED}) == 2
    other = str(write_study(tmp_path, "other", n_trials=2, threads=2, workers=2, baselines=False))
    assert main(["study", other, "--workers", "1"]) == 0  # the flag wins: this process trains, 2 threads
    assert "workers x" not in capsys.readouterr().out
    assert {t.user_attrs["worker"].rsplit(":", 1)[1] for t in load(url, "other").trials} == {str(os.getpid())}
    assert main(["study", other, "--smoke", "--trials", "1"]) == 0  # smoke scale: one process, whatever the file says
    assert "workers x" not in capsys.readouterr().out


def test_two_workers_run_exactly_n_trials(tiny_mnist, tmp_path, capsys):
    url = os.environ["HPO_STORAGE"]
    study_file = str(write_study(tmp_path, n_trials=6, threads=2))
    r = run_hpo("study", study_file, "--workers", "2", timeout=150)
    assert r.returncode == 0, r.stderr
    assert "database is locked" not in r.stdout + r.stderr
    assert "2 workers x 1 thread" in r.stdout
    assert "ran 6 trials" in r.stdout and "outcomes: 6 complete" in r.stdout
    study = load(url)
    assert count(study) == 6
    # Nothing failed or waiting; the only extra trial allowed is the documented race where two workers take the
    # last slot at the same moment: the second trial is not run and ends FAIL with outcome `surplus`.
    extra = [t for t in study.trials if t.state not in COUNTED]
    assert all(t.state == TrialState.FAIL and t.user_attrs.get("outcome") == "surplus"
               and "val_curve" not in t.user_attrs for t in extra), extra
    assert len(extra) <= 1
    assert_no_duplicate_baselines(study)
    assert study_attrs(study)["split"]["n_eval"] == 100  # recorded by a worker: the parent loads no splits
    workers = {t.user_attrs["worker"] for t in study.trials if t.state in COUNTED}
    assert len(workers) == 2, workers  # both processes trained; neither is the parent
    assert str(os.getpid()) not in " ".join(workers)

    assert main(["study", study_file, "--workers", "2"]) == 0
    assert "study already has 6 of 6 trials" in capsys.readouterr().out
    assert len(load(url).trials) == 6 + len(extra)  # the re-run adds nothing


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_ctrl_c_stops_every_worker_and_keeps_the_storage_consistent(tiny_mnist, tmp_path):
    url = os.environ["HPO_STORAGE"]
    study_file = str(write_study(tmp_path, n_trials=200, epochs=3))
    # A terminal's Ctrl-C signals the whole foreground process group: parent and workers.
    proc = subprocess.Popen(hpo_command("study", study_file, "--workers", "2"), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        def started():
            study = load_or_none(url)
            if study is None:
                return None
            trials = study.get_trials(deepcopy=False)
            done = [t for t in trials if t.state == TrialState.COMPLETE]
            return done if len(done) >= 2 and any(t.state == TrialState.RUNNING for t in trials) else None

        wait_for(started, 90, "two finished trials and a running one")
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, out
    assert "interrupted" in out and "run the same command to continue" in out
    study = load(url)
    worker_pids = {int(t.user_attrs["worker"].rsplit(":", 1)[1]) for t in study.trials if "worker" in t.user_attrs}
    assert len(worker_pids) == 2
    wait_for(lambda: not any(_alive(p) for p in worker_pids), 10, "the workers to exit")
    assert not study.get_trials(states=(TrialState.RUNNING,))  # interrupted trials are FAIL, not left running
    for t in study.get_trials(states=(TrialState.FAIL,)):
        assert t.user_attrs.get("outcome") in (None, "interrupted")
    kept = count(study)
    assert kept >= 2


def test_ctrl_c_in_one_process_prints_one_line_and_no_traceback(tiny_mnist, tmp_path):
    """Optuna's warning for the interrupted trial (its parameters and a 25-line traceback) is not shown."""
    url = os.environ["HPO_STORAGE"]
    study_file = str(write_study(tmp_path, n_trials=200, epochs=3))
    proc = subprocess.Popen(hpo_command("study", study_file), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        def running():
            study = load_or_none(url)
            trials = study.get_trials(deepcopy=False) if study else []
            return any(t.state == TrialState.RUNNING for t in trials) and any(
                t.state == TrialState.COMPLETE for t in trials)

        wait_for(running, 90, "a finished trial and a running one")
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err, err
    assert "interrupted:" in out and "run the same command to continue" in out
