"""ElementViews shaped as the presentations' ``views`` make them, with the grammar's default options:
shared by the chart tests and their browser twins."""
from __future__ import annotations

import numpy as np
from support.atlas_cells import classes, make_cells

from interpgram.backends.presentations.atlas import AtlasOptions
from interpgram.backends.presentations.examples import ExamplesOptions
from interpgram.backends.render import ElementView


def atlas_view(patch_test: bool = True, vid: str = "atlas"):
    """An ``atlas`` ElementView shaped as the view builder (backends/views.py) makes it, with the grammar's
    default options; ``patch_test`` adds a class atlas's per-cell flip fractions."""
    cells = make_cells()
    pt = None
    if patch_test:
        for i, c in enumerate(cells):
            c["flip"] = 0.05 * i
        pt = {"class": "class 3", "noise": 0.04, "n": 500, "size": 9, "crop": "centre"}
    data = {"cells": cells, "classes": classes(), "grid": 5, "kind": "attribution" if patch_test else "activation",
            "patch_test": pt, "atlas_classes": ["class 3"] if patch_test else [], "layer": "conv4",
            "samples": sum(c["count"] for c in cells) + 11}
    return ElementView(vid, "atlas", "atlas", "FeatureVis(Activation(Network conv4 Spatial))",
                       AtlasOptions().model_dump(), data)


def examples_view(atoms: int = 2, top: int = 3, patch: bool = False, vid: str = "e"):
    """An ``examples`` ElementView as the view builder makes it (with the grammar's default options)."""
    rng = np.random.default_rng(0)
    rows = [{"label": f"conv4:{a}", "value": float(rng.random()),
             "images": [rng.random((64, 64, 3)).astype(np.float32) for _ in range(top)],
             "scores": sorted(rng.random(top).tolist(), reverse=True), "indices": list(range(a * top, (a + 1) * top)),
             "names": [f"shapes/test/{a * top + j} (star)" for j in range(top)],
             "boxes": [[8, 16, 45, 53]] * top, "positions": [[3, 4]] * top} for a in range(atoms)]
    data = {"atoms": rows, "layer": "conv4", "atom": "channel", "value_name": "activation", "score_name": "max activation",
            "patch": patch, "input_size": [64, 64], "dataset": "builtin:shapes", "n": 100,
            "heading": "dataset examples · conv4", "subtitle": "top 3 of 100"}
    opts = ExamplesOptions(patch=patch).model_dump()
    return ElementView(vid, "examples", "examples", "InfoVis(Activation(Network conv4 Channel))", opts, data)
