"""An icon objective is one registered function: a kind defined in this test file renders through
the same batched, cached ``render_icons`` as the built-in ones."""
from __future__ import annotations

import pytest
import torch

from interpgram.backends.kernels.capture import run_capture
from interpgram.backends.kernels.optvis import objectives as O
from interpgram.backends.kernels.optvis.render import (ICON_OBJECTIVES, Icon, IconSettings, icon_kind,
                                                       render_icons)
from interpgram.backends.models import load_model


@pytest.fixture
def least_channel():
    @icon_kind("least_channel")
    def least(icons):  # the image that switches a channel off the most: minus the channel objective
        return -O.channel(icons[0].layer, torch.tensor([i.index for i in icons]))

    yield least
    ICON_OBJECTIVES.unregister("least_channel")


def test_a_registered_icon_kind_renders_and_means_what_it_says(least_channel):
    model = load_model("builtin:shapes-cnn")
    settings = IconSettings(steps=24, size=48)
    icons = [Icon("conv3", "channel", index=5), Icon("conv3", "least_channel", index=5)]
    most, least = render_icons(model, icons, settings, seed=0, device="cpu")
    module = model.on(torch.device("cpu"), torch.float32)
    with torch.no_grad():
        acts, _ = run_capture(module, model.preprocess(torch.cat([most.images, least.images])), ["conv3"], grad=False)
    mean = acts["conv3"][:, 5].mean(dim=(1, 2))
    assert mean[0] > mean[1]  # the channel icon drives channel 5 up, the least_channel icon down
    assert float(least.scores[0]) == pytest.approx(-float(mean[1]), rel=0.2, abs=0.05)


def test_an_unknown_kind_names_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown icon kind 'blob' \(known: channel, neuron, direction"):
        render_icons(load_model("builtin:shapes-cnn"), [Icon("conv3", "blob", index=0)], IconSettings(steps=1),
                     device="cpu")
