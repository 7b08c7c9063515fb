"""What a model's forward returns, read one way everywhere: :func:`logits_of` (the passes, the layer
probe, class counting, the atlas). It lives with the models because loading a model reads it too."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def logits_of(out: Any) -> torch.Tensor:
    """The logits in what a model's forward returned: a tensor; an object's ``.logits`` (a Hugging Face
    ``ModelOutput``, a dataclass); a mapping's ``'logits'``; the first tensor of a tuple or list. Anything
    else is a :class:`TypeError` naming what was returned."""
    if isinstance(out, torch.Tensor):
        return out
    found = getattr(out, "logits", None)
    if isinstance(found, torch.Tensor):
        return found
    need = ("interpgram needs the logits: a tensor (batch, classes), an object with a .logits tensor, "
            "a dict with a 'logits' tensor, or a tuple whose first tensor is the logits")
    if isinstance(out, Mapping):
        found = out.get("logits")
        if isinstance(found, torch.Tensor):
            return found
        keys = ", ".join(repr(k) for k in list(out)[:8]) + (", …" if len(out) > 8 else "")
        raise TypeError(f"the model's forward returned a {type(out).__name__} with keys [{keys}] and no 'logits' "
                        f"tensor; {need}")
    if isinstance(out, (tuple, list)):
        for v in out:
            if isinstance(v, torch.Tensor):
                return v
        kinds = ", ".join(type(v).__name__ for v in out[:8])
        raise TypeError(f"the model's forward returned a {type(out).__name__} holding no tensor ({kinds or 'empty'}); "
                        f"{need}")
    raise TypeError(f"the model's forward returned {type(out).__module__}.{type(out).__qualname__}; {need}")
