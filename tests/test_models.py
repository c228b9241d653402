"""Models for any data: the built-ins on tabular, non-square and colour inputs with any class count, one registry
for built-ins and a user's builder, and the counts, estimates, augmentation and names that used to assume 784-10."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from hpo.cli import main
from hpo.display import describe_arch
from hpo.errors import ConfigError
from hpo.search.papers import study_paper
from hpo.sources import recorded_shape
from hpo.training.augment import Shifter
from hpo.training.memory import estimate_bytes
from hpo.training.models import (
    BUILDERS,
    build_model,
    check_builder_args,
    cnn,
    count_params,
    mlp_param_count,
    n_features,
    param_count,
)
from hpo.training.spec import TrainConfig

SHAPES = [((12,), 3), ((1, 6, 10), 7), ((3, 8, 8), 5), ((2, 5, 9), 2)]


@pytest.mark.parametrize("shape,n_classes", SHAPES)
@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_the_built_ins_take_any_input_shape_and_class_count(shape, n_classes, model):
    if model == "cnn" and len(shape) != 3:
        pytest.skip("a cnn needs images")
    net = build_model(TrainConfig(model=model, widths=(4, 6)), shape, n_classes)
    out = net(torch.randn(5, n_features(shape)))  # batches arrive flat
    assert out.shape == (5, n_classes)
    hp = {"model": model, "widths": (4, 6)}
    assert param_count(hp, shape, n_classes) == count_params(net)
    if model == "mlp":
        assert mlp_param_count(shape, (4, 6), n_classes) == count_params(net)
        assert mlp_param_count((1, 28, 28), (4, 6), 10) != count_params(net)  # fails if 784-10 were assumed


def test_the_cnn_s_pooling_depth_is_limited_by_the_smaller_side():
    assert cnn((1, 4, 32), (3, 3, 8), 2)(torch.randn(2, 128)).shape == (2, 2)  # two poolings: 4x32 → 1x8
    with pytest.raises(ValueError, match="4x32"):
        cnn((1, 4, 32), (3, 3, 3, 8), 2)  # a third would halve the 4-pixel side below one
    with pytest.raises(ValueError, match="needs images"):
        cnn((12,), (3, 8), 2)


def test_built_ins_and_a_user_s_builder_share_one_registry_and_signature():
    for name, builder in BUILDERS.items():
        assert build_model(TrainConfig(model=name, widths=(4, 4)), (1, 8, 8), 3) is not None  # one registry
        check_builder_args(builder, ["widths", "activation"], "space.yaml")  # the same check a user's builder gets
        with pytest.raises(ConfigError, match="model_args.depth"):
            check_builder_args(builder, ["widths", "depth"], "space.yaml")
    params = inspect.signature(build_model).parameters
    assert all(params[k].default is inspect.Parameter.empty for k in ("input_shape", "n_classes"))  # no 784, 10


def test_the_memory_estimate_runs_the_model_on_the_data_s_real_input_size():
    shape = (3, 8, 8)
    net = build_model(TrainConfig(model="cnn", widths=(4, 6)), shape, 5)
    kw = dict(optimizer="adam", batch_size=16, n_train=100, n_eval=50)
    small = estimate_bytes(net, in_features=n_features(shape), **kw)
    assert small > 0
    with pytest.raises(RuntimeError):  # a 784-wide batch does not fit a 3x8x8 model: 784 is not assumed anywhere
        estimate_bytes(net, in_features=784, **kw)


def test_shift_and_flip_act_on_each_channel_of_non_square_colour_images():
    c, h, w = 3, 5, 7
    imgs = torch.arange(2 * c * h * w, dtype=torch.float32).view(2, c * h * w)
    sh = Shifter((c, h, w), 2, fill=-1.0, device="cpu")
    for dy, dx, flip in [(1, 0, 0), (0, -2, 0), (2, 1, 1), (0, 0, 1)]:
        draws = torch.tensor([[dy, dx, flip]] * 2)
        got = sh(imgs, sh.codes(draws)).view(2, c, h, w)
        src = imgs.view(2, c, h, w)
        for r in range(h):
            for col in range(w):
                sr, sc = r - dy, col - dx
                inside = 0 <= sr < h and 0 <= sc < w
                sc = w - 1 - sc if flip else sc
                want = src[:, :, sr, sc] if inside else torch.full((2, c), -1.0)
                assert torch.equal(got[:, :, r, col], want), (dy, dx, flip, r, col)


def test_recorded_shapes_name_rows_and_architectures_with_the_data_s_real_size():
    split = {"input_shape": [3, 8, 8], "n_classes": 5}
    assert recorded_shape(split) == ((3, 8, 8), 5)
    assert describe_arch([60, 40], (192, 5)) == "192-60-40-5"
    paper = study_paper({"paper": "youn_hong_2024", "split": split})  # a study recorded before papers were files
    assert paper.io == (192, 5) and all(r.name.split()[1].startswith("192-") for r in paper.rows if ":" not in r.name)


BUILD = ("from torch import nn\n\n"
         "def build(input_shape, n_classes, hidden):\n"
         "    return nn.Sequential(nn.Linear(input_shape[-1] if len(input_shape) == 1 else 0, hidden), nn.ReLU(),\n"
         "                         nn.Linear(hidden, n_classes))\n")


def _space(tmp_path, model: str, args: str = "model_args: {hidden: 8}\n") -> None:
    (tmp_path / "space.yaml").write_text(f"model: {model}\n{args}optimizer: adam\nlr: 0.01\nepochs: 1\n")


@pytest.mark.parametrize("model", ["nets.py:build", "nets:build", "mypkg.nets:build"])
def test_a_user_s_builder_is_named_by_file_by_bare_name_beside_the_space_or_by_importable_module(
        tmp_path, monkeypatch, model):
    (tmp_path / "nets.py").write_text(BUILD)
    (tmp_path / "lib" / "mypkg").mkdir(parents=True)
    (tmp_path / "lib" / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "lib" / "mypkg" / "nets.py").write_text(BUILD)
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    _space(tmp_path, model)
    monkeypatch.chdir(tmp_path / "lib")  # the space's folder, not the working directory, holds nets.py
    assert main(["check", str(tmp_path / "space.yaml")]) == 0


@pytest.mark.parametrize("model,files,fragment", [
    ("nosuchpkg.nets:build", {}, "cannot import nosuchpkg.nets: ModuleNotFoundError"),
    ("broken.py:build", {"broken.py": "raise RuntimeError('boom')\n"}, "cannot import"),
    ("nets.py:build", {"nets.py": "build = 3\n"}, "has no function 'build'"),
    ("nets.py:2build", {"nets.py": BUILD}, "expected mlp, cnn, FILE.py:FUNCTION"),
])
def test_a_builder_that_cannot_be_loaded_is_one_line_naming_model(tmp_path, monkeypatch, capsys, model, files,
                                                                   fragment):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    _space(tmp_path, model)
    monkeypatch.chdir(tmp_path)
    assert main(["check", "space.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "space.yaml: model:" in err and fragment in err, err


def test_a_builder_that_returns_no_module_is_refused():
    cfg = TrainConfig(model="operator:mul")  # (12,) * 3: a tuple
    with pytest.raises(TypeError, match="not a torch.nn.Module"):
        build_model(cfg, (12,), 3)
    assert isinstance(build_model(TrainConfig(), (12,), 3), nn.Module)
