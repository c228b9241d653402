"""The training loop, with no Optuna in sight: plain values in, a result with a status out."""

from __future__ import annotations

import pytest

from hpo import data as data_mod
from hpo.training.loop import train
from hpo.training.spec import TrainConfig


@pytest.fixture
def splits(tiny_mnist):
    return data_mod.make_splits(data_mod.load("mnist"), val_size=100, seed=0)


def test_trains_above_chance_and_reports_every_epoch(splits):
    seen = []
    r = train(TrainConfig(widths=(32,), optimizer="adam", lr=3e-3, epochs=3, batch_size=32), splits,
              threads=1, on_epoch=lambda e, acc: seen.append((e, acc)))
    assert r.status == "complete" and r.epochs == 3
    assert [e for e, _ in seen] == [1, 2, 3] and [a for _, a in seen] == r.eval_curve
    assert r.eval_acc > 0.5  # ten learnable classes: chance is 0.1
    assert len(r.loss_curve) == 3 and r.loss_curve[-1] < r.loss_curve[0]
    assert r.samples == 3 * 500 and r.samples_per_sec > 0
    assert r.n_params == 784 * 32 + 32 + 32 * 10 + 10


@pytest.mark.parametrize("optimizer", ["sgd", "sgd_momentum", "adam", "adamw"])
@pytest.mark.parametrize("schedule", ["constant", "cosine", "onecycle"])
def test_every_optimizer_and_schedule_runs(splits, optimizer, schedule):
    r = train(TrainConfig(widths=(16, 16), optimizer=optimizer, lr=0.01, epochs=1, schedule=schedule,
                          dropout=0.1, label_smoothing=0.1, weight_decay=1e-4), splits, threads=1)
    assert r.status == "complete" and len(r.eval_curve) == 1


def test_same_seed_same_result(splits):
    cfg = TrainConfig(widths=(16,), epochs=2, dropout=0.2)
    a, b = train(cfg, splits, threads=1), train(cfg, splits, threads=1)
    assert a.eval_curve == b.eval_curve and a.loss_curve == b.loss_curve
    c = train(cfg.replace(seed=1), splits, threads=1)
    assert c.loss_curve != a.loss_curve


def test_divergence_ends_training_with_a_reason(splits):
    r = train(TrainConfig(widths=(32,), optimizer="sgd", lr=1e8, epochs=5), splits, threads=1)
    assert r.status == "diverged" and ("nan" in r.reason or "inf" in r.reason)
    assert r.epochs < 5


def test_time_cap_stops_mid_epoch(splits):
    r = train(TrainConfig(widths=(32,), epochs=50, batch_size=8), splits, threads=1, max_seconds=1e-4)
    assert r.status == "time_cap" and "time cap" in r.reason
    assert r.epochs == 0 and r.samples < 500


def test_a_callback_can_stop_training(splits):
    class Stop(Exception):
        pass

    def stop_after_two(epoch, acc):
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        train(TrainConfig(widths=(8,), epochs=5), splits, threads=1, on_epoch=stop_after_two)


def test_config_round_trips_through_a_dict():
    cfg = TrainConfig(widths=(60, 40), activation=("relu", "tanh"), lr=0.5)
    d = cfg.to_dict()
    assert d["widths"] == [60, 40] and d["activation"] == ["relu", "tanh"]
    assert TrainConfig.from_dict(d) == cfg
