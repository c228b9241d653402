"""Batch augmentation (hpo/training/augment.py) and the fields that only matter under other fields' values
(hpo.training.spec.CONDITIONS): what the training loop computes with them, and without them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from optuna.trial import TrialState

from hpo import data as data_mod
from hpo.search.runner import run_study
from hpo.training.augment import AUGMENTS, BatchAugment, Shifter, draw, generator
from hpo.training.loop import train
from hpo.training.models import build_model
from hpo.training.pack import train_pack
from hpo.training.spec import TrainConfig
from tests.test_objective import tiny_study


@pytest.fixture
def splits(tiny_mnist):
    return data_mod.make_splits(data_mod.load("mnist"), val_size=100, seed=0)


def _reference(img: torch.Tensor, dy: int, dx: int, flip: int, fill: float, s: int) -> torch.Tensor:
    """Padding and slicing, one image at a time: mirror, pad by s with the fill, cut the shifted window."""
    z = img.flip(-1) if flip else img
    padded = F.pad(z, (s, s, s, s), value=fill)
    return padded[s - dy:s - dy + img.shape[0], s - dx:s - dx + img.shape[1]]


@pytest.mark.parametrize("shift", [0, 1, 2, 4])
def test_every_shift_and_flip_is_padding_and_slicing(shift):
    imgs = torch.randn(3, 784)
    sh = Shifter(784, shift, fill=-0.5, device="cpu")
    for dy in range(-shift, shift + 1):
        for dx in range(-shift, shift + 1):
            for flip in (0, 1):
                draws = torch.tensor([[dy, dx, flip]] * 3)
                got = sh(imgs, sh.codes(draws)).view(3, 28, 28)
                for img, g in zip(imgs.view(3, 28, 28), got):
                    assert torch.equal(g, _reference(img, dy, dx, flip, -0.5, shift)), (dy, dx, flip)


def test_a_batch_mixes_shifts_row_by_row_and_leaves_its_input_alone():
    x = torch.randn(5, 784)
    before = x.clone()
    draws = torch.tensor([[0, 0, 0], [1, -2, 0], [-3, 3, 1], [0, 0, 1], [2, 2, 0]])
    sh = Shifter(784, 3, fill=0.0, device="cpu")
    got = sh(x, sh.codes(draws))
    assert torch.equal(x, before) and torch.equal(got[0], x[0])  # (0, 0, no flip) is the identity
    for row, (dy, dx, flip) in enumerate(draws.tolist()):
        assert torch.equal(got[row].view(28, 28), _reference(x[row].view(28, 28), dy, dx, flip, 0.0, 3))


# (kind, shift): what draws may hold
@pytest.mark.parametrize("kind, shift", [("shift", 2), ("shift_flip", 2), ("shift_flip", 0), ("shift", 5)])
def test_draws_stay_in_range_and_repeat_under_a_seed(kind, shift):
    d = draw(kind, shift, 4000, generator(7))
    assert d.shape == (4000, 3) and d.dtype == torch.long
    assert d[:, :2].abs().max() <= shift
    assert set(d[:, 2].tolist()) == ({0, 1} if kind == "shift_flip" else {0})
    if shift:
        assert set(d[:, 0].tolist()) == set(range(-shift, shift + 1))  # every shift occurs in 4000 draws
    assert torch.equal(d, draw(kind, shift, 4000, generator(7)))
    assert shift == 0 and kind == "shift" or not torch.equal(d, draw(kind, shift, 4000, generator(8)))


@pytest.mark.parametrize("bad", [("none", 2), ("crop", 2)])
def test_draw_refuses_what_is_not_an_augmentation(bad):
    with pytest.raises(ValueError, match="unknown augmentation"):
        draw(*bad, 10, generator(0))


def test_the_augmentation_stream_is_not_the_batch_order_stream():
    a = torch.randint(0, 1000, (50,), generator=generator(0))
    b = torch.randint(0, 1000, (50,), generator=torch.Generator().manual_seed(0))
    assert not torch.equal(a, b)


class Recorder(torch.nn.Module):
    """An MLP that keeps every input it sees, in training and in evaluation."""

    def __init__(self, net):
        super().__init__()
        self.net, self.train_inputs, self.eval_inputs = net, [], []

    def forward(self, x):
        (self.train_inputs if self.training else self.eval_inputs).append(x.detach().clone())
        return self.net(x)


def test_training_batches_are_augmented_and_evaluation_data_are_not(splits):
    cfg = TrainConfig(widths=(16,), batch_size=64, epochs=2, augment="shift_flip", augment_shift=3, seed=5)
    train_x, eval_x = splits.train_x.clone(), splits.eval_x.clone()
    model = Recorder(build_model(cfg, (1, 28, 28), 10))
    r = train(cfg, splits, threads=1, model=model)
    assert r.status == "complete"
    assert torch.equal(splits.train_x, train_x) and torch.equal(splits.eval_x, eval_x)  # data never changed
    assert all(torch.equal(x, eval_x) for x in model.eval_inputs) and len(model.eval_inputs) == 2
    # The first batch: the permutation's first 64 rows, shifted and flipped by the epoch's first 64 draws.
    n = len(train_x)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(5))
    sh = Shifter(784, 3, train_x.min().item(), "cpu")
    codes = sh.codes(draw("shift_flip", 3, n, generator(5)))
    want = sh(train_x[perm[:64]], codes[:64])
    assert torch.equal(model.train_inputs[0], want)
    assert not torch.equal(want, train_x[perm[:64]])


@pytest.mark.parametrize("model, widths", [("mlp", (32, 16)), ("cnn", (4, 8, 16))])
@pytest.mark.parametrize("kind", ["shift", "shift_flip"])
def test_augmented_runs_train_repeat_and_differ_from_plain_ones(splits, model, widths, kind):
    cfg = TrainConfig(model=model, widths=widths, lr=3e-3, batch_size=64, epochs=2, augment=kind, augment_shift=2)
    a, b = train(cfg, splits, threads=1), train(cfg, splits, threads=1)
    plain = train(cfg.replace(augment="none"), splits, threads=1)
    assert a.status == "complete" and a.eval_curve == b.eval_curve and a.loss_curve == b.loss_curve
    assert a.loss_curve != plain.loss_curve
    assert a.eval_acc > 0.3  # still learns (chance is 0.1)


def test_the_fast_relu_step_sees_the_same_augmented_batches_as_autograd(splits):
    cfg = TrainConfig(widths=(32, 16), lr=3e-3, batch_size=32, epochs=2, augment="shift_flip", augment_shift=2)
    fast, slow = train(cfg, splits, threads=1), train(cfg, splits, threads=1, fast=False)
    assert fast.loss_curve == pytest.approx(slow.loss_curve, rel=1e-4)


def test_a_pack_member_augments_as_it_would_alone(splits):
    cfgs = [TrainConfig(widths=(24, 16), lr=2e-3, batch_size=32, epochs=2, seed=0, augment="shift_flip",
                        augment_shift=1),
            TrainConfig(widths=(16, 8), lr=3e-3, batch_size=32, epochs=2, seed=1),
            TrainConfig(widths=(8, 8), lr=3e-3, batch_size=32, epochs=2, seed=2, augment="shift", augment_shift=3)]
    alone = [train(c, splits, threads=1) for c in cfgs]
    packed = train_pack(cfgs, splits, threads=1)
    for a, p in zip(alone, packed):
        assert p.status == a.status == "complete"
        assert p.loss_curve == pytest.approx(a.loss_curve, rel=1e-4)
        for q, r in zip(p.model.parameters(), a.model.parameters()):
            assert torch.allclose(q, r, atol=1e-4)


def test_a_pack_member_keeps_its_own_per_layer_slopes(splits):
    acts = ("leaky_relu", "relu", "leaky_relu")
    cfgs = [TrainConfig(widths=(16, 8, 8), activation=acts, negative_slope=(0.2, 0.01, 0.05), lr=3e-3, batch_size=32,
                        epochs=1, seed=0),
            TrainConfig(widths=(8, 8, 4), activation=acts, negative_slope=(0.01, 0.01, 0.3), lr=3e-3, batch_size=32,
                        epochs=1, seed=1)]
    for a, p in zip([train(c, splits, threads=1) for c in cfgs], train_pack(cfgs, splits, threads=1)):
        assert p.loss_curve == pytest.approx(a.loss_curve, rel=1e-4)
        for q, r in zip(p.model.parameters(), a.model.parameters()):
            assert torch.allclose(q, r, atol=1e-4)


def test_batch_augment_draws_once_per_epoch():
    aug = BatchAugment("shift", 2, seed=0, shape=784, fill=0.0, device="cpu")
    aug.epoch(100)
    first = aug.codes.clone()
    aug.epoch(100)
    assert len(first) == 100 and not torch.equal(first, aug.codes)


def test_augments_registry():
    assert AUGMENTS == ("none", "shift", "shift_flip")


# --- fields that only matter under other fields' values ------------------------------------------

# (config, field, another value): the field is inactive there, so the other value must change nothing.
INACTIVE = [
    (TrainConfig(widths=(16,), optimizer="adam", lr=3e-3), "momentum", 0.5),
    (TrainConfig(widths=(16,), optimizer="adamw", lr=3e-3), "momentum", 0.5),
    (TrainConfig(widths=(16,), optimizer="sgd", lr=0.05), "momentum", 0.5),
    (TrainConfig(widths=(16,), optimizer="sgd_momentum", lr=0.05, schedule="onecycle"), "momentum", 0.5),
    (TrainConfig(widths=(16, 8), activation="relu"), "negative_slope", 0.3),
    (TrainConfig(widths=(16, 8), activation=("relu", "tanh")), "negative_slope", (0.3, 0.2)),
    (TrainConfig(widths=(16, 8), activation=("mix", "relu")), "mix_lr", 0.5),
    (TrainConfig(widths=(16,)), "augment_shift", 5),
]
# ... and where it is active, the other value changes the run (so that the table above can fail).
ACTIVE = [
    (TrainConfig(widths=(16,), optimizer="sgd_momentum", lr=0.05), "momentum", 0.5),
    (TrainConfig(widths=(16,), optimizer="sgd_momentum", lr=0.05, schedule="cosine"), "momentum", 0.5),
    (TrainConfig(widths=(16, 8), activation="leaky_relu"), "negative_slope", 0.3),
    (TrainConfig(widths=(16, 8), activation=("relu", "leaky_relu")), "negative_slope", (0.01, 0.3)),
    (TrainConfig(widths=(16, 8), activation=("mix", "relu"), cycle_epochs=1), "mix_lr", 0.5),
    (TrainConfig(widths=(16,), augment="shift"), "augment_shift", 4),
]


def _run(cfg, splits):
    r = train(cfg.replace(epochs=min(cfg.epochs, 2), batch_size=32), splits, threads=1)
    return r.loss_curve, r.eval_curve, [p.detach().clone() for p in r.model.parameters()]


@pytest.mark.parametrize("cfg, name, other", INACTIVE)
def test_an_inactive_field_changes_nothing(splits, cfg, name, other):
    assert not cfg.active(name) and name not in cfg.to_dict(active_only=True)
    (la, ea, pa), (lb, eb, pb) = _run(cfg, splits), _run(cfg.replace(**{name: other}), splits)
    assert la == lb and ea == eb and all(torch.equal(p, q) for p, q in zip(pa, pb))


@pytest.mark.parametrize("cfg, name, other", ACTIVE)
def test_an_active_field_changes_the_run(splits, cfg, name, other):
    assert cfg.active(name) and name in cfg.to_dict(active_only=True)
    (la, _, pa), (lb, _, pb) = _run(cfg, splits), _run(cfg.replace(**{name: other}), splits)
    assert la != lb or not all(torch.equal(p, q) for p, q in zip(pa, pb))


def test_active_only_dicts_read_back_as_the_same_config():
    for cfg, _, _ in INACTIVE + ACTIVE:
        assert TrainConfig.from_dict(cfg.to_dict(active_only=True)) == cfg
    full = TrainConfig(widths=(8,), optimizer="adam").to_dict()
    assert {"momentum", "negative_slope", "mix_lr", "augment_shift"} <= set(full)


def test_per_layer_slopes_reach_their_layers():
    model = build_model(TrainConfig(widths=(8, 8, 8), activation=("leaky_relu", "relu", "leaky_relu"),
                                    negative_slope=(0.1, 0.01, 0.3)), (1, 28, 28), 10)
    slopes = [m.negative_slope for m in model if isinstance(m, torch.nn.LeakyReLU)]
    assert slopes == [0.1, 0.3]


# --- augment none is what training always computed --------------------------------------------------

# Recorded with the loop as it was before augmentation existed (hpo/training as of commit afe37d4), 1 thread,
# torch 2.13.0 CPU: a run without augmentation must still compute exactly this. The two MLP rows were re-recorded
# when a lone plain MLP became a pack of one (issue 20: the stacked optimizer's update, and dropout from the run's own
# generator, so that a run computes the same floats alone and in any pack); the CNN row is unchanged.
RECORDED = [
    (TrainConfig(widths=(32, 16), optimizer="adam", lr=3e-3, epochs=2, batch_size=32, dropout=0.1, seed=3),
     ["0x1.4b63740000000p+0", "0x1.0a3d6a0000000p-3"]),
    (TrainConfig(widths=(16,), optimizer="sgd_momentum", lr=0.05, epochs=2, batch_size=64, schedule="cosine", seed=1),
     ["0x1.297e7c0000000p+0", "0x1.4a388e0000000p-6"]),
    (TrainConfig(model="cnn", widths=(4, 8, 16), activation="leaky_relu", negative_slope=0.1, optimizer="adamw",
                 lr=3e-3, epochs=1, batch_size=64, seed=2), ["0x1.1b0dba0000000p+1"]),
]


@pytest.mark.parametrize("cfg, losses", RECORDED, ids=["mlp-adam-dropout", "mlp-sgd-momentum", "cnn-leaky"])
def test_without_augmentation_a_run_is_bit_identical_to_before(splits, cfg, losses):
    if torch.__version__.split("+")[0] != "2.13.0":
        pytest.skip("the recorded losses are for torch 2.13.0 (CPU build)")
    torch.set_num_threads(1)
    assert [float(v).hex() for v in train(cfg, splits, threads=1).loss_curve] == losses


# --- a study searches them --------------------------------------------------------------------------

STUDY_SPACE = """\
# test space: conditionals and augmentation
depth: 1
width: {low: 8, high: 32}
optimizer: {choices: [sgd_momentum, adam]}
lr: {low: 1e-3, high: 1e-1, log: true}
momentum: {low: 0.8, high: 0.99, when: {optimizer: [sgd_momentum]}}
batch_size: 64
epochs: 1
augment: {choices: [none, shift, shift_flip]}
augment_shift: {low: 1, high: 3}
"""


@pytest.mark.parametrize("pack", [1, 3])
def test_a_study_records_only_active_parameters_alone_and_in_packs(tmp_path, tiny_mnist, pack):
    path = tiny_study(tmp_path, space=STUDY_SPACE, n_trials=4, pruner="none", budget=f"{{threads: 1, pack: {pack}}}")
    study = run_study(path, smoke=True)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 4  # --smoke: at most 4
    for t in trials:
        config, params = t.user_attrs["config"], t.params
        sgd = params["optimizer"] == "sgd_momentum"
        assert ("momentum" in params) == ("momentum" in config) == sgd
        aug = params["augment"] != "none"
        assert ("augment_shift" in params) == ("augment_shift" in config) == aug
        assert "negative_slope" not in config and "mix_lr" not in config
        assert config["augment"] == params["augment"]
    assert {t.params["augment"] for t in trials} - {"none"}  # some trials trained augmented
