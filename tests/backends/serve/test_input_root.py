"""The page's input box opens image files inside the input folder only (``--input-root``, default the
spec's folder): real files, symlinks and a named pipe on disk, through the engine and a session's page.
Outside paths get one answer whatever is there, so the page cannot probe the server's files."""
from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from interpgram.backends.serve import MAX_TYPED_IMAGES, Dashboard, Session, InputRefused

SPEC = """\
interpgram: 1
title: input root test
model: builtin:shapes-cnn
input: builtin:shapes/10
execution: {{cache: {cache}}}
elements:
  where:
    content: {{attribution: {{from: {{layer: conv4, atom: spatial}}, to: {{layer: output, select: [star]}}}}}}
    presentation: heatmap
"""


def png(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def world(tmp_path):
    """root/ (the spec's folder, with images), and beside it secret/ (an image that must stay unseen)."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "spec.yaml").write_text(SPEC.format(cache=tmp_path / "cache"))
    png(root / "cat.png", 1)
    png(root / "sub" / "dog.png", 2)
    png(tmp_path / "secret" / "real.png", 3)
    engine = Session(root / "spec.yaml")
    assert engine.load(), engine.error
    yield engine, root, tmp_path
    engine.stop()


def refusal(engine: Session, ref: str) -> str:
    with pytest.raises(InputRefused) as e:
        engine.input_target(engine.good, ref)
    return str(e.value)


def test_images_inside_the_folder_open(world):
    engine, root, _ = world
    assert engine.input_root == root.resolve()
    assert engine.input_target(engine.good, "cat.png") == str(root / "cat.png")
    assert engine.input_target(engine.good, "sub/../sub/dog.png") == str(root / "sub" / "dog.png")
    assert engine.input_target(engine.good, str(root / "cat.png")) == str(root / "cat.png")  # absolute, inside
    dash = Dashboard(engine)
    dash.choose_input("sub/dog.png")
    assert not dash.input_alert.visible and dash.comp.ref == "sub/dog.png"
    assert "dog.png" in dash.status.object and "sub/dog.png" in dash.input_select.options.values()


def test_outside_paths_get_one_answer_whether_or_not_they_exist(world):
    engine, root, tmp = world
    (root / "out-link.png").symlink_to(tmp / "secret" / "real.png")  # a symlink out of the folder
    (root / "dangling.png").symlink_to(tmp / "secret" / "nothing.png")
    (root / "secret-dir").symlink_to(tmp / "secret", target_is_directory=True)
    pairs = [  # (a path that exists, one that does not): the answers must not tell them apart
        ("../secret/real.png", "../secret/none.png"),
        (str(tmp / "secret" / "real.png"), str(tmp / "secret" / "none.png")),
        ("/etc/passwd", "/etc/no-such-file"),
        ("out-link.png", "dangling.png"),
        ("secret-dir/real.png", "secret-dir/none.png"),
        ("sub/../../secret/real.png", "sub/../../secret/none.png"),
    ]
    for there, absent in pairs:
        a, b = refusal(engine, there), refusal(engine, absent)
        assert "inside the input folder only" in a and "--input-root" in a, a
        assert a.replace(repr(there), "REF") == b.replace(repr(absent), "REF"), (a, b)
        assert str(tmp) not in a.replace(repr(there), "")  # no server path in the answer beyond the text typed
    # `~` is a file name here, not a home folder (expanding it would tell which user names exist)
    assert refusal(engine, "~/x.png") == "input image not found: ~/x.png (in the input folder)"
    assert refusal(engine, "~root/x.png") == "input image not found: ~root/x.png (in the input folder)"


def test_the_page_shows_the_refusal_and_keeps_its_input(world):
    engine, root, tmp = world
    dash = Dashboard(engine)
    dash.choose_input("cat.png")
    shown = dash.comp
    dash.choose_input(str(tmp / "secret" / "real.png"))
    text = html.unescape(dash.input_alert.object)
    assert dash.input_alert.visible and "inside the input folder only" in text
    assert "Traceback" not in text and dash.comp is shown and dash.input_ref == "cat.png"


def test_what_is_inside_but_not_an_image_is_refused_without_reading_it(world):
    engine, root, _ = world
    os.mkfifo(root / "pipe.png")  # opening it for reading would block forever
    (root / "notes.txt").write_text("hello")
    (root / "folder.png").mkdir()
    assert "pipe.png is not an image file (a folder, pipe or device)" in refusal(engine, "pipe.png")
    assert "folder.png is not an image file" in refusal(engine, "folder.png")
    assert "notes.txt is not an image file (.bmp" in refusal(engine, "notes.txt")
    assert refusal(engine, "missing.png") == "input image not found: missing.png (in the input folder)"
    assert "not a valid path" in refusal(engine, "cat\0.png")


def test_a_named_input_root_replaces_the_spec_folder(world, tmp_path):
    engine, root, tmp = world
    other = Session(root / "spec.yaml", input_root=tmp / "secret")
    assert other.load(), other.error
    try:
        assert other.input_target(other.good, "real.png") == str(tmp / "secret" / "real.png")
        with pytest.raises(InputRefused, match="inside the input folder only"):
            other.input_target(other.good, "../root/cat.png")
        # the spec's own inputs are the operator's: always allowed
        assert other.input_target(other.good, "builtin:shapes/10") == "builtin:shapes/10"
    finally:
        other.stop()


def test_typed_builtin_ranges_are_bounded(world):
    engine, _, _ = world
    assert engine.input_target(engine.good, f"builtin:shapes/0-{MAX_TYPED_IMAGES - 1}") == f"builtin:shapes/0-{MAX_TYPED_IMAGES - 1}"
    assert f"at most {MAX_TYPED_IMAGES}" in refusal(engine, "builtin:shapes/0-4000")
