"""Trial packs: K same-shape MLPs as one stacked computation (hpo/training/pack.py), each member an ordinary
Optuna trial (hpo/search/pack_runner.py). A member computes exactly what it would alone with the same seed."""

from __future__ import annotations

import optuna
import pytest
import torch
from optuna.storages._heartbeat import BaseHeartbeatThread
from optuna.trial import TrialState
from studyfiles import write_study
from torch import nn

from hpo import data as data_mod
from hpo.errors import HpoError
from hpo.optuna_private import heartbeat_thread, optimize_loop, stop_requested
from hpo.results.compare import compare_study
from hpo.results.export import export, load_config
from hpo.results.retrain import train_file
from hpo.search.runner import run_study
from hpo.search.study import prepare
from hpo.search.studyfile import load_study
from hpo.training import pack as pack_mod
from hpo.training.loop import _scheduler, train
from hpo.training.models import build_model
from hpo.training.pack import (
    StackedMLP,
    StackedOptimizer,
    calibrate_pack,
    member_losses,
    pack_key,
    schedule,
    schedule_table,
    train_pack,
)
from hpo.training.runtime import OPTIMIZERS
from hpo.training.spec import TrainConfig
from hpo.trials import COUNTED, PACK

MEMBERS = [
    TrainConfig(widths=(40, 24), optimizer="adam", lr=1e-3, batch_size=32, epochs=2, seed=0),
    TrainConfig(widths=(16, 32), optimizer="adam", lr=3e-3, batch_size=32, epochs=3, seed=1, schedule="cosine",
                weight_decay=1e-4, label_smoothing=0.05),
    TrainConfig(widths=(8, 8), optimizer="adam", lr=2e-3, batch_size=32, epochs=2, seed=2, schedule="onecycle"),
]


@pytest.fixture
def splits(tiny_mnist):
    return data_mod.make_splits(data_mod.load("mnist"), val_size=100, seed=0)


@pytest.mark.parametrize("widths, act", [((40, 24), "relu"), ((5, 9), "sigmoid"), ((7,), "leaky_relu"),
                                         ((12, 3, 6), "tanh")])
def test_the_first_step_has_each_member_s_own_loss_and_gradients(widths, act):
    """Padded and masked: a member's loss and gradients in the pack are those of its network alone, also for
    activations that are not 0 at 0 (sigmoid), where a padded unit would otherwise leak."""
    cfgs = [TrainConfig(widths=widths, activation=act, seed=0, negative_slope=0.1, label_smoothing=0.1),
            TrainConfig(widths=tuple(w + 3 for w in widths), activation=act, seed=1, negative_slope=0.3)]
    models = [build_model(c, (1, 28, 28), 10) for c in cfgs]
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 16, 784, generator=g), torch.randint(0, 10, (2, 16), generator=g)
    net = StackedMLP(models, cfgs, "cpu")
    eps = torch.tensor([c.label_smoothing for c in cfgs])
    losses = member_losses(net.forward(x, training=True), y, eps)
    losses.sum().backward()
    for k, (model, c) in enumerate(zip(models, cfgs)):
        alone = nn.CrossEntropyLoss(label_smoothing=c.label_smoothing)(model(x[k]), y[k])
        alone.backward()
        assert losses[k].item() == pytest.approx(alone.item(), rel=1e-5)
        linears = [m for m in model if isinstance(m, nn.Linear)]
        for i, lin in enumerate(linears):
            gw, gb = net.weights[i].grad[k], net.biases[i].grad[k, 0]
            assert torch.allclose(gw[:lin.in_features, :lin.out_features], lin.weight.grad.t(), atol=1e-6)
            assert torch.allclose(gb[:lin.out_features], lin.bias.grad, atol=1e-6)
            assert gw[lin.in_features:].abs().sum() == 0 and gw[:, lin.out_features:].abs().sum() == 0  # padding


@pytest.mark.parametrize("name", ["cosine", "onecycle"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_schedules_are_torch_s_own(name, optimizer):
    """lr (and one-cycle's cycled momentum or beta1) per step, as torch's schedulers hand them to an optimizer."""
    cfg = TrainConfig(schedule=name, optimizer=optimizer, lr=0.05)
    p = [torch.zeros(1, requires_grad=True)]
    opt = OPTIMIZERS[optimizer](p, cfg)
    sched = _scheduler(opt, cfg, 40)
    want_lr, want_m = [], []
    for _ in range(40):
        group = opt.param_groups[0]
        want_lr.append(group["lr"])
        want_m.append(group["betas"][0] if "betas" in group else group["momentum"])
        p[0].grad = torch.zeros(1)
        opt.step()
        sched.step()
    lrs, moms = schedule(cfg, 40)
    assert lrs == pytest.approx(want_lr, rel=1e-9)
    if name == "onecycle" and optimizer != "sgd":
        assert moms == pytest.approx(want_m, rel=1e-9)
    if optimizer == "sgd":  # plain SGD keeps momentum 0 under every schedule: nothing cycles it
        assert moms is None and set(want_m) == {0.0}


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd", "sgd_momentum"])
def test_a_member_ends_where_it_would_alone(splits, optimizer):
    """Same seed, same batches, same updates: each member's curves match its lone run (float tolerance)."""
    lr = {"sgd": 0.05, "sgd_momentum": 0.02}.get(optimizer, 1)
    cfgs = [c.replace(optimizer=optimizer, lr=c.lr * lr if lr != 1 else c.lr) for c in MEMBERS]
    alone = [train(c, splits, threads=1) for c in cfgs]
    packed = train_pack(cfgs, splits, threads=1)
    for a, p, c in zip(alone, packed, cfgs):
        assert p.status == a.status == "complete" and p.epochs == a.epochs == c.epochs
        assert p.eval_acc == pytest.approx(a.eval_acc, abs=0.005)
        assert p.loss_curve == pytest.approx(a.loss_curve, rel=1e-4)
        assert p.samples == a.samples
        for q, r in zip(p.model.parameters(), a.model.parameters()):  # the member's own network, trained
            assert torch.allclose(q, r, atol=1e-4)


def test_the_final_validation_accuracy_matches_on_fashion_mnist(fmnist_available):
    """The issue's bar on real data: 5,000 training images, 2,000 validation images, two epochs."""
    splits = data_mod.make_splits(data_mod.load("fashion_mnist"), val_size=10000, seed=0, train_limit=5000,
                                  eval_limit=2000)
    cfgs = [c.replace(batch_size=64, epochs=2) for c in MEMBERS]
    alone = [train(c, splits, threads=1).eval_acc for c in cfgs]
    packed = [r.eval_acc for r in train_pack(cfgs, splits, threads=1)]
    assert packed == pytest.approx(alone, abs=0.005)


def test_one_member_stopped_or_diverged_leaves_the_others_unchanged(splits):
    cfgs = [MEMBERS[0], MEMBERS[1].replace(lr=1e30, schedule="constant"), MEMBERS[2]]  # the second diverges

    def stop_the_third(member, epoch, acc):
        if member == 2:
            raise RuntimeError("stop here")

    packed = train_pack(cfgs, splits, threads=1, on_epoch=stop_the_third, check_every=1)
    alone = train(cfgs[0], splits, threads=1)
    assert packed[0].status == "complete" and packed[0].loss_curve == pytest.approx(alone.loss_curve, rel=1e-4)
    lone = train(cfgs[1], splits, threads=1, check_every=1)
    assert (packed[1].status, packed[1].reason) == (lone.status, lone.reason) == ("diverged", lone.reason)
    assert lone.reason.startswith("loss became nan in epoch 1")
    assert packed[2].status == "stopped" and packed[2].epochs == 1 and str(packed[2].stopped_by) == "stop here"


def test_what_cannot_be_packed_says_why():
    assert pack_key(TrainConfig(model="cnn", widths=(4, 8, 16))) is None
    assert pack_key(TrainConfig(activation="prelu")) is None and pack_key(TrainConfig(activation="mix")) is None
    assert pack_key(MEMBERS[0]) == pack_key(MEMBERS[1].replace(widths=(3, 5)))
    assert pack_key(MEMBERS[0]) != pack_key(MEMBERS[0].replace(batch_size=64))
    with pytest.raises(ValueError, match="must share model, depth, batch size"):
        train_pack([MEMBERS[0], MEMBERS[0].replace(batch_size=64)], None)


# --- as Optuna trials ---------------------------------------------------------------------------


def test_a_packed_study_holds_ordinary_trials_and_exactly_n_trials(tiny_mnist, tmp_path):
    url = f"sqlite:///{tmp_path / 'packs.db'}"
    study_file = str(write_study(tmp_path, n_trials=7, epochs=2, pack=3))
    study = run_study(study_file, storage=url)
    trials = study.get_trials(deepcopy=False)
    assert len([t for t in trials if t.state in COUNTED]) == 7 and len(trials) == 7
    for t in trials:
        assert t.state == TrialState.COMPLETE
        assert {"config", "outcome", "epochs_trained", "train_seconds", "val_curve", "n_params", "dead_units",
                "worker"} <= set(t.user_attrs)
        assert sorted(t.intermediate_values) == [1, 2]
    # Members of one pack share what a pack shares (here only the fixed batch size, depth and optimizer).
    assert {t.user_attrs["config"]["batch_size"] for t in trials} == {64}
    # The paper's baselines were packed too and gave what they give alone.
    alone = run_study(study_file, storage=f"sqlite:///{tmp_path / 'alone.db'}", pack=1, trials=3)
    by_name = {t.user_attrs["baseline"]: t.values[0] for t in alone.trials}
    assert {t.user_attrs["baseline"]: t.values[0] for t in trials if t.user_attrs.get("baseline")} == \
        pytest.approx(by_name, abs=0.005)
    resumed = run_study(study_file, storage=url, trials=9)  # resume: two more, in one pack
    assert len([t for t in resumed.get_trials(deepcopy=False) if t.state in COUNTED]) == 9


def test_the_members_of_a_drawn_pack_share_their_widths_and_not_their_learning_rates(tiny_mnist, tmp_path):
    path = write_study(tmp_path, n_trials=6, epochs=1, pack=3, baselines=False,
                       width="{low: 8, high: 64, per_layer: true}")
    trials = run_study(str(path), storage=f"sqlite:///{tmp_path / 'w.db'}").get_trials(deepcopy=False)
    packs = [trials[:3], trials[3:]]  # asked pack by pack: the first member, then its pack-mates
    for pack in packs:
        assert len({tuple(t.user_attrs["config"]["widths"]) for t in pack}) == 1
        assert len({t.params["lr"] for t in pack}) == 3
        assert [t.user_attrs[PACK] for t in pack] == [3, 3, 3]  # a time budget counts a third of each one's run
    assert len({tuple(t.user_attrs["config"]["widths"]) for t in trials}) == 2  # first members draw freely


def test_a_member_over_a_cap_or_pruned_is_its_own_outcome(tiny_mnist, tmp_path):
    """A member refused by the parameter cap is pruned before training while its pack-mates train; the pruner
    stops members one at a time."""
    path = write_study(tmp_path, n_trials=6, epochs=4, pack=3, pruner="median",
                       width="{low: 8, high: 64, per_layer: true}")
    text = path.read_text().replace("budget: {threads: 1", "budget: {threads: 1, max_params: 40000")
    text += "pruner_options: {n_startup_trials: 1, n_warmup_steps: 0}\n"
    path.write_text(text)
    study = run_study(str(path), storage=f"sqlite:///{tmp_path / 'caps.db'}")
    outcomes = [t.user_attrs["outcome"] for t in study.trials]
    assert "param_cap" in outcomes  # the 784-60-30/60-40 baselines exceed 40,000 parameters
    assert len([t for t in study.trials if t.state in COUNTED]) == 6
    for t in study.trials:
        if t.user_attrs["outcome"] == "param_cap":
            assert "epochs_trained" not in t.user_attrs
        elif t.user_attrs["outcome"] == "pruned":
            assert t.state == TrialState.PRUNED and len(t.user_attrs["val_curve"]) == t.user_attrs["epochs_trained"]


def test_a_pack_of_cnn_trials_trains_them_one_by_one(tiny_mnist, tmp_path):
    space = tmp_path / "cnn_space.yaml"
    space.write_text("model: cnn\ndepth: 2\nwidth: {low: 2, high: 4, per_layer: true}\nactivation: relu\n"
                     "optimizer: adam\nlr: {low: 1e-3, high: 1e-2, log: true}\nbatch_size: 64\nepochs: 1\n")
    study_file = tmp_path / "cnn.yaml"
    study_file.write_text(f"dataset: mnist\nspace: {space}\npruner: none\nn_trials: 3\n"
                          "split: {val_size: 100, seed: 0}\nbudget: {threads: 1, pack: 3}\n")
    study = run_study(str(study_file), storage=f"sqlite:///{tmp_path / 'cnn.db'}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3


def test_pack_size_is_checked_at_the_edge(tiny_mnist, tmp_path):
    path = write_study(tmp_path, pack=2)
    assert load_study(str(path)).budget.pack == 2
    with pytest.raises(HpoError, match="--pack: must be a positive number or auto, but got 0"):
        prepare(str(path), pack=0)
    path.write_text(path.read_text().replace("pack: 2", "pack: two"))
    with pytest.raises(HpoError, match=r"budget.pack: expected a positive number of trials or auto, but got 'two'"):
        load_study(str(path))


def test_packs_with_two_workers_end_at_exactly_n_trials(tiny_mnist, tmp_path):
    # Trials long enough (3 epochs) that one worker cannot take every pack before the other asks for its first.
    study_file = str(write_study(tmp_path, n_trials=8, epochs=3, pack=2, threads=2))
    study = run_study(study_file, storage=f"sqlite:///{tmp_path / 'w.db'}", workers=2)
    trials = study.get_trials(deepcopy=False)
    assert len([t for t in trials if t.state in COUNTED]) == 8
    assert len({t.user_attrs["worker"] for t in trials if t.state in COUNTED}) == 2
    assert all(t.user_attrs.get("outcome") == "surplus" for t in trials if t.state == TrialState.FAIL)


def test_a_pack_member_reports_to_optuna_each_epoch(tiny_mnist, tmp_path):
    """The pruner sees each member's own curve: intermediate values equal its recorded validation curve."""
    study = run_study(str(write_study(tmp_path, n_trials=3, epochs=3, pack=3)),
                      storage=f"sqlite:///{tmp_path / 'r.db'}")
    for t in study.trials:
        assert [t.intermediate_values[e] for e in (1, 2, 3)] == pytest.approx(t.user_attrs["val_curve"], abs=1e-5)
    assert optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'r.db'}").best_value > 0


def test_export_and_compare_see_a_packed_study_s_trials_as_ordinary_ones(tiny_mnist, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'e.db'}"
    study = run_study(str(write_study(tmp_path, n_trials=5, epochs=2, pack=5)), storage=url)
    (path, best), = export("tiny", storage=url)
    assert best.number == max(study.best_trials, key=lambda t: t.values[0]).number
    assert load_config(path).train.widths == tuple(best.user_attrs["config"]["widths"])
    result = compare_study("tiny", storage=url, seeds=2, epochs=1, references=False)
    assert {e["kind"] for e in result["entries"]} == {"paper", "optimum"}


def test_the_hand_written_relu_step_is_autograd_s_step():
    """StackedMLP.fast_step writes the gradients autograd computes for the same stacked forward."""
    cfgs = [TrainConfig(widths=(20, 12), seed=0, label_smoothing=0.1), TrainConfig(widths=(9, 15), seed=1)]
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 16, 784, generator=g), torch.randint(0, 10, (2, 16), generator=g)
    eps = torch.tensor([c.label_smoothing for c in cfgs])
    ref = StackedMLP([build_model(c, (1, 28, 28), 10) for c in cfgs], cfgs, "cpu")
    member_losses(ref.forward(x, training=True), y, eps).sum().backward()
    fast = StackedMLP([build_model(c, (1, 28, 28), 10) for c in cfgs], cfgs, "cpu")
    for p in fast.parameters():
        p.grad = torch.full_like(p, float("nan"))  # every entry must be written
    assert fast.relu
    losses = fast.fast_step(x, y, eps)
    assert losses.tolist() == pytest.approx(member_losses(ref.forward(x, training=False), y, eps).tolist(), rel=1e-6)
    for p, q in zip(fast.parameters(), ref.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6)


def test_a_pack_trains_the_same_with_and_without_the_hand_written_step(splits):
    fast = train_pack(MEMBERS, splits, threads=1)
    slow = train_pack(MEMBERS, splits, threads=1, fast=False)
    for a, b in zip(fast, slow):
        assert a.loss_curve == pytest.approx(b.loss_curve, rel=1e-4)
        assert a.eval_curve == pytest.approx(b.eval_curve, abs=0.02)


def test_a_member_s_floats_do_not_depend_on_k_or_its_pack_mates(fmnist_available):
    """Issue 20's measurement on a subset: one 784-60-40-10 Adam shape, batch 64, 2 epochs, a grid of 8 learning
    rates (the issue's 0.03 and 0.01 differed alone and in a pack of 8), two members with dropout. Alone, in a
    pack of 8 and in a pack of 3 with other mates, every member's curves and weights are bitwise the same."""
    splits = data_mod.make_splits(data_mod.load("fashion_mnist"), val_size=10000, seed=0, train_limit=3000,
                                  eval_limit=1000)
    lrs = (0.03, 0.01, 0.005, 0.003, 0.002, 0.001, 0.0003, 0.0001)
    cfgs = [TrainConfig(widths=(60, 40), optimizer="adam", lr=lr, batch_size=64, epochs=2, seed=0,
                        dropout=0.2 if lr in (0.01, 0.002) else 0.0) for lr in lrs]
    alone = [train(c, splits, threads=1) for c in cfgs]
    eight = train_pack(cfgs, splits, threads=1)
    three = train_pack([cfgs[1], cfgs[0].replace(lr=0.05), cfgs[4]], splits, threads=1)
    for a, p in zip(alone, eight):
        assert p.eval_curve == a.eval_curve and p.loss_curve == a.loss_curve
        for q, r in zip(p.model.parameters(), a.model.parameters()):
            assert torch.equal(q, r)
    assert [three[0].eval_curve, three[2].eval_curve] == [alone[1].eval_curve, alone[4].eval_curve]
    assert len({a.eval_acc for a in alone}) > 4  # the grid trains to different places: the check has teeth


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd", "sgd_momentum"])
@pytest.mark.parametrize("sched", ["constant", "onecycle"])
def test_the_stacked_optimizer_is_torch_s_for_each_member(optimizer, sched):
    """One update for the whole pack, each member with its own learning rate, momentum and weight decay, lands
    where torch.optim (and its OneCycleLR) takes that member alone, to float precision."""
    cfgs = [TrainConfig(widths=(6,), optimizer=optimizer, lr=lr, momentum=m, weight_decay=wd, schedule=sched, epochs=1)
            for lr, m, wd in ((0.01, 0.9, 0.0), (0.003, 0.5, 1e-2), (0.03, 0.0, 1e-3))]
    g = torch.Generator().manual_seed(0)
    start = torch.randn(3, 5, 4, generator=g)
    grads = torch.randn(10, 3, 5, 4, generator=g)
    stacked = start.clone()
    opt = StackedOptimizer(optimizer, [stacked], cfgs)
    lrs, moms = schedule_table(cfgs, 10, "cpu")
    for t in range(10):
        stacked.grad.copy_(grads[t])
        opt.step(lrs[:, t], moms[:, t] if moms is not None else None)
    for k, c in enumerate(cfgs):
        p = start[k].clone().requires_grad_(True)
        ref = OPTIMIZERS[optimizer]([p], c)
        sched_ = _scheduler(ref, c, 10)
        for t in range(10):
            p.grad = grads[t, k].clone()
            ref.step()
            if sched_ is not None:
                sched_.step()
        assert torch.allclose(stacked[k], p.detach(), rtol=1e-5, atol=1e-6), (k, (stacked[k] - p).abs().max())


def test_a_pack_member_s_export_trains_back_to_its_recorded_accuracy(tiny_mnist, tmp_path, monkeypatch):
    """`hpo train FILE --validation` re-trains a member alone: it gets back the accuracy recorded in the pack."""
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'r.db'}"
    run_study(str(write_study(tmp_path, n_trials=4, epochs=2, width="24", pack=4, baselines=False)), storage=url)
    exported = export("tiny", top=4, storage=url)
    assert len(exported) == 4
    for path, trial in exported:
        r = train_file(str(path), validation=True, threads=1)
        assert r["runs"][0]["accuracy"] == pytest.approx(trial.values[0], abs=1e-4)
        assert r["reproduced"] is True


def test_the_private_optuna_names_packs_use_exist(tmp_path):
    """hpo/optuna_private.py's private names (STYLE lesson 17): an upgrade that changes them fails here."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'p.db'}")
    trial = study.ask()
    assert isinstance(heartbeat_thread(study, trial), BaseHeartbeatThread)
    with pytest.raises(RuntimeError):
        study.stop()  # outside optimize(): refused
    with optimize_loop(study):
        assert not stop_requested(study)
        study.stop()
        assert stop_requested(study)


def test_auto_pack_size_never_takes_a_pack_that_is_not_faster(monkeypatch):
    """calibrate_pack takes the fastest candidate per model-sample, a larger K only when clearly faster."""
    rates = {1: 100.0, 2: 105.0, 4: 300.0, 8: 310.0}
    monkeypatch.setattr(pack_mod, "_step_rate", lambda cfg, k, *a: rates[k])
    cfg = TrainConfig(widths=(8,), batch_size=32)
    assert calibrate_pack(cfg, 784, 10, candidates=(1, 2, 4, 8)) == 4
    rates.update({4: 90.0, 8: 95.0, 2: 99.0})
    assert calibrate_pack(cfg, 784, 10, candidates=(1, 2, 4, 8)) == 1


def test_a_study_with_pack_auto_runs_exactly_n_trials(tiny_mnist, tmp_path):
    path = write_study(tmp_path, n_trials=6, epochs=1, baselines=False)
    text = path.read_text().replace("budget: {threads: 1}", "budget: {threads: 1, pack: auto}")
    path.write_text(text)
    assert load_study(str(path)).budget.pack == "auto"
    study = run_study(str(path), storage=f"sqlite:///{tmp_path / 'a.db'}")
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 6
    with pytest.raises(HpoError, match="--pack"):
        prepare(str(path), pack=0)
