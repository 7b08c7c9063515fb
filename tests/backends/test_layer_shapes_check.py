"""Layers the grammar cannot read, channel bounds and icon sizes are checked at `check` time, on
small real torch models built by the spec's own python: factory."""
from __future__ import annotations

import textwrap

import pytest

from interpgram.backends.cli import main
from interpgram.backends.pipeline import prepare
from interpgram.grammar import SpecError
from interpgram.grammar.plan import FeatureVis

MODELS = '''
import torch
from torch import nn


class Tokens(nn.Module):
    """(N, C, h, w) -> (N, h*w, C): the patches as tokens, as a vision transformer has them."""
    def forward(self, x):
        return x.flatten(2).transpose(1, 2)


class TokenNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 64, 8, stride=8)   # (64, 4, 4) on 32 px
        self.tokens = Tokens()                        # (16, 64)
        self.block = nn.Linear(64, 64)                # (16, 64): a token layer
        self.head = nn.Linear(64, 5)

    def forward(self, x):
        t = self.block(self.tokens(self.patch(x)))
        self.pooled = t.mean(1)
        return self.head(t.mean(1))


class FixedSize(nn.Module):
    """A convolutional network that refuses any input but 160 px, as Hugging Face's ViT does."""
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        if x.shape[-1] != 160 or x.shape[-2] != 160:
            raise ValueError(f"Input image size ({x.shape[-2]}*{x.shape[-1]}) doesn't match model (160*160).")
        return self.head(self.conv2(self.conv1(x)).mean((2, 3)))


def tokens():
    torch.manual_seed(0)
    return TokenNet(), {"size": 32}


def fixed():
    torch.manual_seed(0)
    return FixedSize(), {"size": 160}
'''


@pytest.fixture
def folder(tmp_path, request):
    mod = f"shape_models_{request.node.name.replace('[', '_').replace(']', '').replace('-', '_')}"
    (tmp_path / f"{mod}.py").write_text(MODELS)
    return tmp_path, mod


def spec(folder, factory: str, elements: str) -> str:
    tmp, mod = folder
    p = tmp / "spec.yaml"
    p.write_text(f"interpgram: 1\nmodel: python:{mod}:{factory}\ninput: builtin:shapes/3\nelements:\n"
                 + textwrap.indent(textwrap.dedent(elements), "  "))
    return str(p)


def problems(path: str) -> list[str]:
    with pytest.raises(SpecError) as e:
        prepare(path, allow_code=True)
    return [str(d) for d in e.value.diagnostics]


def test_a_token_layer_is_a_positioned_error_naming_the_shapes_that_work(folder):
    path = spec(folder, "tokens", """\
    chan:
      content: {activation: {layer: block, atom: channel}}
      presentation: bars
    wide:
      content: {activation: {layer: block, atom: {channel: 40}}}
      presentation: bars
    attr:
      content:
        attribution:
          from: {layer: block, atom: channel}
          to: {layer: output}
      presentation: bars
    """)
    got = problems(path)
    assert len(got) == 3, got
    for line, msg in zip((6, 9, 14), got):
        assert msg.startswith(f"{path}:{line}:")
        assert "(16, 64)" in msg and "token layer" in msg and "(C, H, W)" in msg and "(C,)" in msg


def test_channels_are_bounds_checked_against_the_layer(folder):
    path = spec(folder, "tokens", """\
    ok:
      content: {activation: {layer: patch, atom: {channel: 63}}}
      presentation: bars
    over:
      content: {activation: {layer: patch, atom: {channel: 100}}}
      presentation: bars
    neuron:
      content: {activation: {layer: patch, atom: {neuron: [1, 1, 64]}}}
      presentation: bars
    """)
    got = problems(path)
    assert len(got) == 2, got
    assert got[0].startswith(f"{path}:9:") and "channel 100 is outside 'patch' (64 channels: 0..63)" in got[0]
    assert got[1].startswith(f"{path}:12:") and "channel 64 is outside 'patch'" in got[1]


def test_icons_default_to_the_input_size_of_a_model_that_takes_no_other(folder):
    path = spec(folder, "fixed", """\
    icons:
      content: {activation: {layer: conv2, atom: {channel: 3}}}
      presentation: featurevis
    """)
    prep = prepare(path, allow_code=True)
    (fv,) = prep.plan.of_type(FeatureVis)
    assert dict(fv.settings)["size"] == 160  # not 128: a 128 px image never reaches conv2
    out = folder[0] / "report"
    assert main(["render", path, "--allow-code", "--icon-steps", "2", "--no-cache", "-q", "-o", str(out)]) == 0
    assert (out / "index.html").exists()


def test_an_icon_size_the_model_does_not_take_is_refused_at_check_naming_the_option(folder, capsys):
    path = spec(folder, "fixed", """\
    icons:
      content: {activation: {layer: conv2, atom: {channel: 3}}}
      presentation: {featurevis: {size: 96}}
    grid:
      content: {activation: {layer: conv1, atom: spatial}}
      presentation: activation_grid
    """)
    assert main(["check", path, "--allow-code"]) == 1
    err = capsys.readouterr().err
    assert f"{path}:7:" in err and "108 px" in err and "set size to 160" in err and "{crop_or_pad: 160}" in err and "doesn't match model" in err
    assert f"{path}:10:" in err and "set cell_size + 2 × crop to 160" in err
    assert "2 problems found" in err and "Traceback" not in err


def test_a_model_that_takes_smaller_images_keeps_small_icons(folder):
    path = spec(folder, "tokens", """\
    icons:
      content: {activation: {layer: patch, atom: {channel: 3}}}
      presentation: featurevis
    """)
    (fv,) = prepare(path, allow_code=True).plan.of_type(FeatureVis)
    assert dict(fv.settings)["size"] == 32


def test_the_grammar_spells_the_standard_transforms_as_the_renderer_runs_them():
    from interpgram.backends.kernels.optvis.transforms import STANDARD, normalize_steps
    from interpgram.grammar.compile.vocab import STANDARD_TRANSFORMS, freeze
    assert normalize_steps(freeze([*STANDARD_TRANSFORMS, {"crop_or_pad": 160}])) == STANDARD + (("crop_or_pad", 160),)


def test_sprites_of_a_model_that_takes_no_other_size_render(folder, capsys):
    tmp, mod = folder
    assert main(["sprites", f"python:{mod}:fixed", "conv2", "--channels", "1", "--steps", "2", "--allow-code", "-q",
                 "--cache-dir", str(tmp / "cache"), "--base-dir", str(tmp)]) == 0
    assert "160 px" in capsys.readouterr().out
