"""The committed builtin:shapes-cnn weights still reach their recorded accuracy on fresh images,
and the planted shortcut they learned is still measurable."""
from __future__ import annotations

import json

import pytest
import torch

from interpgram.backends.data import shapes as S
from interpgram.backends.models.shapes_cnn import METADATA, ShapesCNN, load_shapes_cnn
from interpgram.backends.models.train_shapes_cnn import predict

STAR = S.CLASSES.index(S.SHORTCUT_CLASS)


@pytest.fixture(scope="module")
def model():
    return load_shapes_cnn()


@pytest.fixture(scope="module")
def meta():
    return json.loads(METADATA.read_text())


def test_named_stages_and_shapes(model):
    shapes = {}
    hooks = [getattr(model, n).register_forward_hook(lambda m, i, o, n=n: shapes.update({n: tuple(o.shape[1:])}))
             for n in ("conv1", "conv2", "conv3", "conv4", "conv5")]
    model(torch.zeros(1, 3, 64, 64))
    for h in hooks:
        h.remove()
    assert shapes == {"conv1": (32, 32, 32), "conv2": (64, 32, 32), "conv3": (128, 16, 16),
                      "conv4": (128, 8, 8), "conv5": (256, 4, 4)}
    assert sum(p.numel() for p in ShapesCNN().parameters()) == 539_178


def test_recorded_accuracy_on_fresh_images(model, meta):
    # a seed and index range the training never saw (training used the train split)
    b = S.generate(range(5000, 6000), split="test", seed=7, shortcut_prevalence=0.0)
    acc = (predict(model, b.images) == b.labels).float().mean().item()
    assert meta["accuracy"] >= 0.95
    assert acc >= meta["accuracy"] - 0.02, (acc, meta["accuracy"])


def test_the_shortcut_is_learned(model):
    b = S.generate(range(6000, 7000), split="test", seed=7, shortcut_prevalence=0.0)
    others = b.labels != STAR
    imgs, masks = b.images[others], b.masks[others]
    stitch, _ = S.paste_patch(imgs, masks=masks, kind="stitch", generator=torch.Generator().manual_seed(3))
    noise, _ = S.paste_patch(imgs, masks=masks, kind="noise", generator=torch.Generator().manual_seed(3))
    flip = lambda x: (predict(model, x) == STAR).float().mean().item()  # noqa: E731
    f_stitch, f_noise, f_none = flip(stitch), flip(noise), flip(imgs)
    assert f_stitch >= 0.10 and f_stitch >= 2.5 * f_noise and f_none <= 0.02, (f_stitch, f_noise, f_none)


def test_normalisation_constants_are_the_data_sets_statistics():
    from interpgram.backends.models.shapes_cnn import MEAN, STD

    mean, std = S.channel_stats(1000, split="train")
    assert max(abs(a - b) for a, b in zip(mean, MEAN)) < 0.01, (mean, MEAN)
    assert max(abs(a - b) for a, b in zip(std, STD)) < 0.01, (std, STD)


def test_each_stage_has_its_own_relu_and_the_model_loads_in_eval_mode(model):
    relus = [m for m in model.modules() if isinstance(m, torch.nn.ReLU)]
    assert len(relus) == 5 and len({id(m) for m in relus}) == 5
    assert not any(m.inplace for m in relus)
    assert not model.training
    for stage in ("conv1", "conv2", "conv3", "conv4", "conv5"):
        assert isinstance(getattr(model, stage)[-1], torch.nn.ReLU)  # the stage's output is post-ReLU
    for pool in ("pool2", "pool3", "pool4"):
        assert isinstance(getattr(model, pool), torch.nn.MaxPool2d)


def test_a_missing_weights_file_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_shapes_cnn"):
        load_shapes_cnn(tmp_path / "nope.safetensors")


def test_the_metadata_records_how_the_figures_were_measured(meta):
    assert meta["eval_split"] == "test" and meta["n_eval"] >= 1000 and isinstance(meta["eval_seed"], int)
    assert meta["eval_shortcut_prevalence"] == 0.0
    assert meta["training"]["shortcut_prevalence"] == S.SHORTCUT_PREVALENCE
    assert meta["training"]["seed"] == 0 and meta["training"]["wall_seconds"] > 0 and meta["training"]["torch"]
    assert meta["flip_to_star_with_stitch_patch"] > meta["flip_to_star_with_noise_patch"]


def test_training_is_seeded():
    from interpgram.backends.models.train_shapes_cnn import train

    quiet = lambda *_: None  # noqa: E731
    a = train(n_train=64, epochs=1, batch=32, lr=0.01, seed=0, log=quiet).state_dict()
    b = train(n_train=64, epochs=1, batch=32, lr=0.01, seed=0, log=quiet).state_dict()
    c = train(n_train=64, epochs=1, batch=32, lr=0.01, seed=1, log=quiet).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["fc.weight"], c["fc.weight"])
