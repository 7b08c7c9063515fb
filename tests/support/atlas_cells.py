"""Synthetic atlas cells shared by the chart tests and their browser twin."""
from __future__ import annotations

import numpy as np

from interpgram.backends.render.charts import png_data_url


def make_cells(n_classes=15, seed=0):
    rng = np.random.default_rng(seed)
    where = [(0, 0), (1, 0), (4, 4), (2, 3), (3, 1), (0, 4)]
    counts = [7, 12, 40, 9, 25, 5]
    cells = []
    for i, ((col, row), n) in enumerate(zip(where, counts)):
        attr = rng.normal(size=n_classes)
        cells.append({"col": col, "row": row, "count": n, "top_class": int(np.argmax(attr)),
                      "icon": png_data_url(rng.random((6, 6, 3))),
                      "patches": png_data_url(rng.random((6, 18, 3))) if i % 2 == 0 else None,
                      "attribution": attr.tolist(), "size": float(np.log(n) / np.log(40))})
    cells[5]["icon"] = None  # a kept cell whose icon is missing: a grey square, no image
    return cells


def classes(k=15):
    return [f"class {i}" for i in range(k)]
