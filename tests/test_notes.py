"""hpo.results.notes: trial notes in words for every outcome, the study's live note and its rate, the artifact
folder and its flags, pictures, and failures that warn instead of failing a trial; the report as the study's note."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal

import optuna
import pytest
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState
from optuna_dashboard import get_note
from optuna_dashboard._note import get_note_from_system_attrs, version_is_incremented
from rich.console import Console
from studyfiles import write_study

from hpo import data as data_mod
from hpo.cli import main
from hpo.errors import StudyError
from hpo.results import notes as notes_mod
from hpo.results.notes import LiveNote, TrialNotes, artifact_dir, live_note, open_store, trial_note
from hpo.search.objective import Objective
from hpo.search.papers import load_paper
from hpo.search.storage import open_storage
from hpo.search.studyfile import load_study
from hpo.search.workers import _Interrupts
from hpo.training.loop import train
from hpo.urls import sqlite_path

CONFIG = {"model": "mlp", "widths": [60, 40], "activation": "relu", "optimizer": "adam", "lr": 1e-3, "batch_size": 64,
          "epochs": 10, "schedule": "constant"}


# --- a trial in words -----------------------------------------------------------------------------------

CASES = [
    ("complete baseline", "complete", 0.8712,
     {"config": CONFIG, "n_params": 50890, "epochs_trained": 10, "train_seconds": 23.4, "samples_per_sec": 21000.0,
      "baseline": "T3 784-60-40-10 adam lr=0.001", "paper_reported": 0.9707, "io": [784, 10]},
     ["### Trial 7: complete", "Validation accuracy **87.12%** after 10 epochs in 23.4 s (21,000 samples/s).",
      "Configuration: `784-60-40-10 relu adam lr=1.00e-03 bs=64 ep=10 constant` (50,890 parameters).",
      "Paper baseline **T3 784-60-40-10 adam lr=0.001** (Youn & Hong 2024, Table 3): the paper reports 97.07%; "
      "here 87.12% on the validation split (-9.95 points)."]),
    ("pruned", "pruned", None,
     {"config": CONFIG, "epochs_trained": 3, "train_seconds": 4.0, "val_curve": [0.7, 0.75, 0.78],
      "reason": "pruned after epoch 3 at 0.7800"},
     ["### Trial 7: pruned", "Trained 3 of 10 epochs in 4.0 s; last validation accuracy 78.00%.",
      "Reason: pruned after epoch 3 at 0.7800"]),
    ("diverged", "diverged", None,
     {"config": CONFIG, "epochs_trained": 1, "train_seconds": 1.0, "reason": "loss became nan in epoch 1"},
     ["### Trial 7: diverged", "Reason: loss became nan in epoch 1"]),
    ("param cap", "param_cap", None,
     {"config": CONFIG, "n_params": 50890, "reason": "50890 parameters exceed the cap of 1000; not trained"},
     ["### Trial 7: param_cap", "Not trained.", "Reason: 50890 parameters exceed the cap of 1000; not trained"]),
    ("crashed", "crashed", None, {"config": CONFIG, "reason": "RuntimeError: boom"},
     ["### Trial 7: crashed", "Stopped before any epoch ended.", "Reason: RuntimeError: boom"]),
]


@pytest.mark.parametrize("label,state,value,attrs,expected", CASES, ids=[c[0] for c in CASES])
def test_a_trial_note_says_what_happened(label, state, value, attrs, expected):
    note = trial_note(7, state, attrs, value, load_paper("youn_hong_2024", io=(784, 10)), picture="/artifacts/1/2/abc")
    for line in expected:
        assert line in note.splitlines(), (line, note)
    assert note.endswith("![validation accuracy per epoch](/artifacts/1/2/abc)")
    assert ("Paper baseline" in note) == ("baseline" in attrs)


def test_a_trial_note_stays_in_one_chunk_of_the_dashboards_storage():
    note = trial_note(1, "crashed", {"config": CONFIG, "reason": "x" * 10_000}, None)
    assert len(note) <= notes_mod.TRIAL_NOTE_MAX < 2045
    assert "x" * notes_mod.REASON_MAX not in note and "…" in note


# --- where the pictures go ------------------------------------------------------------------------------


def test_the_artifact_folder_sits_beside_a_sqlite_file_unless_told(tmp_path, monkeypatch):
    monkeypatch.delenv(notes_mod.ARTIFACTS_ENV, raising=False)
    assert artifact_dir("sqlite:///runs/hpo.db") == notes_mod.Path("runs/artifacts")
    assert artifact_dir(f"sqlite:///{tmp_path}/x/hpo.db") == tmp_path / "x" / "artifacts"
    assert artifact_dir("postgresql://u:pw@db/hpo") is None
    assert artifact_dir("postgresql://u:pw@db/hpo", str(tmp_path / "pics")) == tmp_path / "pics"
    monkeypatch.setenv(notes_mod.ARTIFACTS_ENV, str(tmp_path / "env"))
    assert artifact_dir("sqlite:///runs/hpo.db") == tmp_path / "env"
    assert artifact_dir("sqlite:///runs/hpo.db", str(tmp_path / "flag")) == tmp_path / "flag"  # the flag wins


def test_a_bad_artifact_folder_is_one_clear_line(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    with pytest.raises(StudyError, match=r"^--artifacts: .*file exists and is not a folder$"):
        artifact_dir("sqlite:///x.db", str(tmp_path / "file"))
    with pytest.raises(StudyError, match="^--artifacts: expected a folder"):
        artifact_dir("sqlite:///x.db", " ")
    monkeypatch.setenv(notes_mod.ARTIFACTS_ENV, str(tmp_path / "file"))
    with pytest.raises(StudyError, match=f"^{notes_mod.ARTIFACTS_ENV}: .*is not a folder$"):
        artifact_dir("sqlite:///x.db")


@pytest.mark.parametrize("command", [["study", "x.yaml"], ["dashboard"], ["compare", "x"], ["report", "x"]])
def test_every_command_takes_the_artifact_flag_and_refuses_a_file(command, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    open_storage(url, heartbeat=False)
    optuna.create_study(study_name="x", storage=url)
    args = command[:1] + ([str(write_study(tmp_path, "x"))] if command[0] == "study" else command[1:])
    assert main([*args, "--storage", url, "--artifacts", str(tmp_path / "file")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"hpo: error: --artifacts: {tmp_path / 'file'} exists and is not a folder"], err


# --- notes written by the objective -----------------------------------------------------------------------


def _splits():
    return data_mod.make_splits(data_mod.load("mnist"), val_size=100, seed=0)


def _cfg(tmp_path, **kw):
    return load_study(str(write_study(tmp_path, **kw)))


def test_every_outcome_gets_a_note_and_a_complete_trial_its_curve(tmp_path, tiny_mnist):
    cfg = _cfg(tmp_path, n_trials=3, epochs=2, baselines=False)
    store = open_store(tmp_path / "artifacts")
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}", direction="maximize")
    calls = []

    def train_fn(tc, data, **kw):  # trial 1 crashes; the others train for real
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom in training")
        return train(tc, data, **kw)

    study.optimize(Objective(cfg, _splits(), threads=1, train_fn=train_fn, notes=TrialNotes(None, store)), n_trials=3,
                   catch=(Exception,))
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    for t in study.trials:
        note = _trial_note(study, t)
        assert note.startswith(f"### Trial {t.number}: {'complete' if t.state == TrialState.COMPLETE else 'crashed'}")
    assert "Reason: RuntimeError: boom in training" in _trial_note(study, study.trials[1])
    for t in (study.trials[0], study.trials[2]):
        metas = get_all_artifact_meta(t, storage=study._storage)
        assert [m.filename for m in metas] == [f"trial-{t.number}-validation-curve.png"]
        assert f"/artifacts/{study._study_id}/{t._trial_id}/{metas[0].artifact_id})" in _trial_note(study, t)
        assert (tmp_path / "artifacts" / metas[0].artifact_id).read_bytes()[:4] == b"\x89PNG"
    assert get_all_artifact_meta(study.trials[1], storage=study._storage) == []
    attrs = study._storage.get_study_system_attrs(study._study_id)
    assert version_is_incremented(attrs, study.trials[0]._trial_id, 2)  # the dashboard's editor saves version 2


def _trial_note(study, t) -> str:
    """The note as optuna-dashboard's own reader finds it (its API serialises trials with this function)."""
    note = get_note_from_system_attrs(study._storage.get_study_system_attrs(study._study_id), t._trial_id)
    assert note["version"] == 1  # so that an edit in the dashboard (version 2) is accepted
    return note["body"]


def test_capped_trials_get_notes_too(tmp_path, tiny_mnist):
    cfg = _cfg(tmp_path, n_trials=2, epochs=1, memory_mb=1, baselines=False,  # every model is over a 1 MiB cap
               width="{low: 2000, high: 3000, per_layer: true}")
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'c.db'}", direction="maximize")
    study.optimize(Objective(cfg, _splits(), threads=1, notes=TrialNotes()), n_trials=2)
    for t in study.trials:
        assert t.state == TrialState.PRUNED
        note = _trial_note(study, t)
        assert note.startswith(f"### Trial {t.number}: memory_cap") and "Not trained." in note and "MiB cap" in note


def test_a_failing_note_warns_once_and_the_trial_goes_on(tmp_path, tiny_mnist, caplog, monkeypatch):
    cfg = _cfg(tmp_path, n_trials=2, epochs=2, baselines=False)
    store = open_store(tmp_path / "gone")
    (tmp_path / "gone").rmdir()  # every upload now fails
    monkeypatch.setattr(notes_mod, "_WARNED", set())  # a fresh memory of the warnings shown
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'f.db'}", direction="maximize")
    with caplog.at_level(logging.WARNING, logger="hpo.results.notes"):
        study.optimize(Objective(cfg, _splits(), threads=1, notes=TrialNotes(None, store)), n_trials=2)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines  # the second trial's same failure is not repeated
    assert lines[0].startswith("hpo: warning: trial 0: a trial's validation-curve picture was not uploaded: "
                               "FileNotFoundError: ")
    assert lines[0].endswith("(the run goes on; repeats are not shown)") and "\n" not in lines[0]
    assert "![" not in _trial_note(study, study.trials[0])  # the note went without its picture


def test_past_the_cap_only_baselines_and_new_bests_get_a_trial_note(tmp_path):
    """optuna-dashboard's study page costs trials x notes; past TrialNotes.up_to a trial gets none unless it is
    one of the paper's baselines or beats every trial completed before it (not one that only ties it)."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'c.db'}", direction="maximize")
    notes = TrialNotes(up_to=2)
    values = [0.9, 0.8, 0.85, 0.7, 0.95, 0.95]
    for i, value in enumerate(values):
        trial = study.ask()
        if i == 3:
            trial.set_user_attr("baseline", "T3-1")
        notes.write(trial, "complete", value)
        study.tell(trial, value)
    pruned = study.ask()
    notes.write(pruned, "pruned", None)
    study.tell(pruned, state=TrialState.PRUNED)
    attrs = study._storage.get_study_system_attrs(study._study_id)
    has_note = [get_note_from_system_attrs(attrs, t._trial_id)["version"] == 1 for t in study.trials]
    assert has_note == [True, True, False, True, True, False, False]


# --- the study's live note --------------------------------------------------------------------------------


def test_the_live_note_is_written_at_a_bounded_rate(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'l.db'}", direction="maximize")
    now = [0.0]
    note = LiveNote(every_trials=10, every_seconds=60, clock=lambda: now[0])
    for i in range(25):
        study.tell(study.ask(), 0.5 + i / 100)
        now[0] += 1.0
        note(study, study.trials[-1])
    assert note.writes == 3  # after trial 1, 11 and 21
    now[0] += 61
    study.tell(study.ask(), 0.1)
    note(study, study.trials[-1])
    assert note.writes == 4  # a minute passed
    note.flush(study)
    assert note.writes == 4  # nothing new since
    study.tell(study.ask(), 0.2)
    note(study, study.trials[-1])
    note.flush(study)
    assert note.writes == 5 and "27 finished trials" in get_note(study)


def test_the_live_note_sets_the_best_against_the_papers_best_configuration(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'b.db'}", direction="maximize")
    for name, reported, value in (("T3 784-50-30-10 adam lr=0.001", 0.9698, 0.86),
                                  ("T3 784-60-40-10 adam lr=0.001", 0.9707, 0.87)):
        study.enqueue_trial({}, user_attrs={"baseline": name, "paper_reported": reported})
        t = study.ask()
        t.set_user_attr("config", CONFIG)
        study.tell(t, value)
    t = study.ask()
    t.set_user_attr("config", {**CONFIG, "lr": 3e-3})
    study.tell(t, 0.8842)
    assert "Paper:" not in live_note(study)  # a study that recorded no paper names none
    study.set_user_attr("paper_record", load_study("relu3_adam").paper.record())
    note = live_note(study)
    assert "Paper: **Youn & Hong 2024, Optimization of Model based on Relu Activation" in note
    assert "| best so far | trial 2 | 88.42% |" in note
    assert ("| paper's best configuration, T3 784-60-40-10 adam lr=0.001 (paper reports 97.07% on its test set) "
            "| trial 1 | 87.00% |") in note
    assert "**+1.42 points** against the paper's best configuration" in note


# --- hpo study: one process, packs, workers ----------------------------------------------------------------


def _notes_of(url: str, name: str = "tiny") -> tuple[optuna.Study, dict]:
    study = optuna.load_study(study_name=name, storage=open_storage(url, heartbeat=False))
    return study, study._storage.get_study_system_attrs(study._study_id)


@pytest.mark.parametrize("how", ["here", "pack", "workers"])
def test_hpo_study_writes_a_note_on_every_trial_and_the_live_note(how, tmp_path, tiny_mnist, monkeypatch):
    from hpo.api import run_study

    url = os.environ["HPO_STORAGE"]
    kw = {"workers": 2} if how == "workers" else {"pack": 2} if how == "pack" else {}
    run_study(str(write_study(tmp_path, n_trials=4, epochs=2)), console=Console(file=io.StringIO()), **kw)
    study, attrs = _notes_of(url)
    trials = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(trials) == 4
    for t in trials:
        note = _trial_note(study, t)
        assert note.startswith(f"### Trial {t.number}: complete"), note
        if t.user_attrs.get("baseline"):
            assert f"Paper baseline **{t.user_attrs['baseline']}**" in note
        assert "![validation accuracy per epoch](/artifacts/" in note  # 2 epochs: a curve worth drawing
    live = get_note(study)
    assert live.startswith("## tiny: best so far (validation)")
    assert int(re.search(r"(\d+) finished trials", live).group(1)) >= 4  # written once more as the run ended
    folder = sqlite_path(url).parent / "artifacts"
    assert len(os.listdir(folder)) == 4


# --- the report in the dashboard --------------------------------------------------------------------------


def test_the_report_becomes_the_study_note_and_replaces_its_pictures(tmp_path, tiny_mnist):
    from hpo.api import run_study
    from hpo.results.charts import PARAMS_CHART_ID
    from hpo.results.report import write_report

    url = os.environ["HPO_STORAGE"]
    run_study(str(write_study(tmp_path, n_trials=3, epochs=2)), console=Console(file=io.StringIO()))
    study, _ = _notes_of(url)
    folder = sqlite_path(url).parent / "artifacts"
    for _ in range(2):  # a second report replaces the first one's pictures
        write_report(study, None, tmp_path / "r")
    attrs = study._storage.get_study_system_attrs(study._study_id)
    pictures = attrs[notes_mod.REPORT_ARTIFACTS_ATTR]
    metas = get_all_artifact_meta(study)
    assert sorted(m.artifact_id for m in metas) == sorted(pictures.values())
    assert sorted(m.filename for m in metas) == ["curves.png", "history.png", "importances.png", "params.png"]
    linked = set(re.findall(r"!\[[^\]]*\]\(([^)\s]+\.png)\)", (tmp_path / "r" / "report.md").read_text()))
    assert linked == {m.filename for m in metas}  # every picture report.md shows, and no other
    assert len(os.listdir(folder)) == 3 + 4  # three trial curves and one set of report pictures
    note = get_note(study)
    assert note.startswith("## tiny: automated search against the hand-tuned configurations")
    assert "Not compared on the test set yet: `hpo compare tiny`" in note and "### Search-space boundaries" in note
    for artifact_id in pictures.values():
        assert f"(/artifacts/{study._study_id}/{artifact_id})" in note
    plot = "".join(v for k, v in sorted(attrs.items()) if k.startswith(f"dashboard:plot_data:{PARAMS_CHART_ID}:"))
    figure = json.loads(plot)
    assert [d["name"] for d in figure["data"]] == ["searched trial (validation)",
                                                   "paper configuration, trained here (validation)", "paper-reported"]


def test_a_comparison_goes_into_the_note(tmp_path, tiny_mnist):
    from hpo.api import run_study
    from hpo.results.compare import compare_study

    run_study(str(write_study(tmp_path, n_trials=3, epochs=1)), console=Console(file=io.StringIO()))
    result = compare_study("tiny", seeds=1, epochs=1, references=False, out=tmp_path / "out",
                           console=Console(file=io.StringIO()))
    study, _ = _notes_of(os.environ["HPO_STORAGE"])
    note = get_note(study)
    assert "### Test-set comparison: mnist, seeds [0]" in note
    assert ("| configuration | paper-reported (fashion_mnist) | paper config re-run | automated optimum | difference |"
            in note)
    for line in result["findings"]:
        assert f"- {line}" in note
    assert "### Protocol assumptions" in note and "- **batch_size** = 64: " in note
    attrs = study._storage.get_study_system_attrs(study._study_id)
    assert note.count("](/artifacts/") == len(attrs[notes_mod.REPORT_ARTIFACTS_ATTR]) >= 3  # history, params, curves


def test_the_dashboard_refuses_a_missing_artifact_folder_it_was_given(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    open_storage(url, heartbeat=False)
    assert main(["dashboard", "--storage", url, "--artifacts", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"hpo: error: {tmp_path / 'nope'}: no such artifact folder; `hpo study` and `hpo compare` make it "
                   f"(pass the same --artifacts to them)"], err
    assert not (tmp_path / "nope").exists()


def test_ctrl_c_while_a_note_is_written_fails_the_trial_as_interrupted(tmp_path, tiny_mnist):
    cfg = _cfg(tmp_path, n_trials=1, epochs=1, baselines=False)

    class Interrupting:
        def write(self, trial, state, value):
            raise KeyboardInterrupt

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'k.db'}", direction="maximize")
    with pytest.raises(KeyboardInterrupt):
        study.optimize(Objective(cfg, _splits(), threads=1, notes=Interrupting()), n_trials=1)
    t = study.trials[0]
    assert t.state == TrialState.FAIL and t.user_attrs["outcome"] == "interrupted"


def test_a_worker_s_signal_once_training_has_ended_stops_it_after_the_trial_is_told(tmp_path, tiny_mnist):
    """A worker raises signals only inside training (its objective trains through _Interrupts.around): one
    that arrives while the note is written leaves the finished trial COMPLETE and stops the worker after it."""
    cfg = _cfg(tmp_path, n_trials=2, epochs=1, baselines=False)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        interrupts = _Interrupts()
        interrupts.raise_now = False  # loaded: the worker lowers it before its trials start

        class Signalling:
            def write(self, trial, state, value):
                os.kill(os.getpid(), signal.SIGINT)  # the handler runs at once, in this (the main) thread

        study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", direction="maximize")
        objective = Objective(cfg, _splits(), threads=1, notes=Signalling(), train_fn=interrupts.around(train))
        study.optimize(objective, n_trials=2, callbacks=[interrupts])
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])
    assert interrupts.requested
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]  # told as finished; no second trial
    assert study.trials[0].user_attrs["outcome"] == "complete"
