"""Atlas icons as tasks of an execution engine.

The icons that are not in the result cache are split, in order, into batches of ``batch`` icons;
each batch is one batched optimisation (:func:`~interpgram.backends.kernels.optvis.render.render_icons`)
and one task of the engine: in this process (:class:`~.engine.LocalEngine`) or on a Ray worker
(:class:`~.engine.RayEngine`, one GPU per task where the cluster has GPUs). Both engines see the
same batches, and an icon's random start depends only on the seed and the icon, so they give the
same icons. The driver writes every finished icon to the cache as its batch arrives.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from interpgram.backends.execute.engines import LocalEngine
from interpgram.backends.kernels.optvis.render import Icon, IconSettings, icon_cache_key, render_icons


def _render_batch(shared: dict, icons: list[Icon]) -> tuple[torch.Tensor, torch.Tensor]:
    """One engine task: render ``icons`` in one batched optimisation (cuda when the worker has it)."""
    device = shared["device"]
    if device == "auto" or (str(device).startswith("cuda") and not torch.cuda.is_available()):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    results = render_icons(shared["model"], icons, shared["settings"], seed=shared["seed"], cache=None,
                           device=device, batch_size=len(icons), progress=shared.get("progress"))
    return (torch.cat([r.images for r in results]).cpu(), torch.cat([r.scores for r in results]).cpu())


def render_atlas_icons(model, icons: Sequence[Icon], settings: IconSettings, *, seed: int, batch: int, cache=None,
                       device="auto", engine=None, progress: Optional[Callable[[str, int, int], None]] = None
                       ) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """(images (n, 3, s, s), scores (n,), icons rendered, icons from the cache) for ``icons`` in order."""

    progress = progress or (lambda stage, i, n: None)
    s = settings.resolved(model.preprocess.size)
    n = len(icons)
    images = torch.zeros(n, 3, s.size, s.size)
    scores = torch.zeros(n)
    todo: list[int] = []
    for i, ic in enumerate(icons):
        hit = cache.get(icon_cache_key(model.digest, ic, s, seed)) if cache is not None else None
        if hit is None:
            todo.append(i)
        else:
            images[i], scores[i] = hit["image"], hit["score"]
    if not todo:
        return images, scores, 0, n
    batches = [todo[a:a + batch] for a in range(0, len(todo), batch)]
    engine = engine or LocalEngine()
    # each Ray worker uses its own GPU when it has one (the engine asks for one per task where the
    # cluster has GPUs, none on a CPU-only cluster)
    shared = {"model": model, "settings": settings, "seed": seed,
              "device": device if isinstance(engine, LocalEngine) else "auto"}
    if isinstance(engine, LocalEngine):
        shared["progress"] = progress  # steps of each batch (a Ray task reports when its batch is done)
    done = 0
    progress(f"atlas icons: {len(todo)} to render in {len(batches)} batch(es)", 0, len(todo))
    for idx, (imgs, scs) in zip(batches, engine.map(_render_batch, [[icons[i] for i in b] for b in batches],
                                                    shared=shared, gpus=1)):
        for j, i in enumerate(idx):
            images[i], scores[i] = imgs[j], scs[j]
            if cache is not None:
                cache.put(icon_cache_key(model.digest, icons[i], s, seed), {"image": imgs[j], "score": scs[j]})
        done += len(idx)
        progress(f"atlas icons: {len(todo)} to render in {len(batches)} batch(es)", done, len(todo))
    return images, scores, len(todo), n - len(todo)

