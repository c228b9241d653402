"""hpo.optuna_private: each private behaviour of Optuna and optuna-dashboard that hpo relies on, checked against
the installed versions, so that an upgrade which changes one fails here by name."""

from __future__ import annotations

from importlib import metadata

import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.trial import TrialState
from optuna_dashboard import _note, get_note, save_note  # _note: the private format, to compare

from hpo import optuna_private


@pytest.fixture
def study(tmp_path):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    return optuna.create_study(study_name="p", storage=RDBStorage(url, heartbeat_interval=60, grace_period=120))


def test_the_versions_written_against_are_named():
    installed = {name: metadata.version(name) for name in optuna_private.WRITTEN_AGAINST}
    assert set(installed) == {"optuna", "optuna-dashboard", "sqlalchemy"}
    for name, version in installed.items():  # a major upgrade is where private names move: look here first
        assert version.split(".")[0] == optuna_private.WRITTEN_AGAINST[name].split(".")[0], (name, version)


def test_the_backend_of_a_database_study_is_its_rdb_storage_and_the_ids_are_the_storages(study):
    assert isinstance(optuna_private.backend(study), RDBStorage)
    assert optuna_private.study_id(study) == optuna_private.storage(study).get_study_id_from_name("p")
    trial = study.ask()
    assert optuna_private.storage(study).get_trial(optuna_private.trial_id(trial)).number == trial.number
    frozen = study.get_trials(deepcopy=False)[0]
    assert optuna_private.trial_id(frozen) == optuna_private.trial_id(trial)


def test_study_system_attributes_round_trip_and_stay_out_of_user_attributes(study):
    optuna_private.set_study_system_attr(study, "hpo:x", {"a": 1})
    assert optuna_private.study_system_attrs(study)["hpo:x"] == {"a": 1}
    assert "hpo:x" not in study.user_attrs


def test_the_note_format_written_out_is_the_dashboard_s():
    assert optuna_private.NOTE_CHUNK == _note.SYSTEM_ATTR_MAX_LENGTH
    assert optuna_private._note_ver_key(7) == _note.note_ver_key(7)
    assert optuna_private._note_str_key_prefix(7) == _note.note_str_key_prefix(7)


def test_a_first_trial_note_reads_back_through_the_dashboard_and_takes_a_second_version(study):
    trial = study.ask()
    optuna_private.save_first_trial_note(trial, "x" * optuna_private.NOTE_CHUNK)
    assert get_note(trial) == "x" * optuna_private.NOTE_CHUNK
    save_note(trial, "edited")  # the dashboard's own writer sees version 1 and writes version 2 over it
    assert get_note(trial) == "edited"
    with pytest.raises(ValueError, match="one chunk"):
        optuna_private.save_first_trial_note(study.ask(), "x" * (optuna_private.NOTE_CHUNK + 1))


def test_silent_running_trials_are_those_without_a_heartbeat(study):
    rdb = optuna_private.backend(study)
    silent, beating, done = study.ask(), study.ask(), study.ask()
    rdb.record_heartbeat(optuna_private.trial_id(beating))
    study.tell(done, 1.0)
    assert optuna_private.silent_running_trials(rdb, study) == {optuna_private.trial_id(silent)}
    rdb.set_trial_state_values(optuna_private.trial_id(silent), state=TrialState.FAIL)
    assert optuna_private.silent_running_trials(rdb, study) == set()
