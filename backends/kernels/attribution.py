"""Attribution as in the Building Blocks article: gradient × activation, reduced per atom.

- spatial attribution sums over channels, channel attribution sums over positions;
- layer → output uses a class logit (or, through ``compare``, the difference of two);
- layer → layer uses the L2 norm of the target position's activation vector as the scalar;
- the path-integrated variant averages ∇f(A·n/N) over n = 0…N−1 and multiplies by A.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from interpgram.backends.kernels.capture import hooks, logits_of


def target_values(kind: str, logits: torch.Tensor, acts: dict[str, torch.Tensor], *, cls: Optional[int] = None,
                  layer: Optional[str] = None, at: Optional[tuple[int, int]] = None,
                  predicted: Optional[torch.Tensor] = None, channel: Optional[int] = None) -> torch.Tensor:
    """The per-sample scalar (N,) whose gradient is taken."""
    if kind == "channel":  # Σ over positions of one channel (layer-to-layer channel attribution)
        a = acts[layer]
        totals = a.sum(dim=(2, 3)) if a.dim() == 4 else a
        if channel is not None:
            return totals[:, channel]
        return totals.gather(1, totals.detach().argmax(1, keepdim=True)).squeeze(1)
    if kind == "logit":
        if cls is not None:
            return logits[:, cls]
        idx = predicted if predicted is not None else logits.detach().argmax(1)
        return logits.gather(1, idx.view(-1, 1).to(logits.device)).squeeze(1)
    if kind == "norm":
        a = acts[layer]
        if at is not None:
            x, y = at
            return a[:, :, y, x].norm(dim=1)
        norms = a.norm(dim=1)  # (N, h, w)
        flat = norms.flatten(1)
        return flat.gather(1, flat.detach().argmax(1, keepdim=True)).squeeze(1)
    raise ValueError(f"unknown target kind {kind!r}")


def strongest_position(a: torch.Tensor) -> torch.Tensor:
    """(N, 2) x, y of the largest activation-vector norm per sample."""
    norms = a.detach().norm(dim=1)
    w = norms.shape[-1]
    idx = norms.flatten(1).argmax(1)
    return torch.stack([idx % w, idx // w], dim=1)


def gradients(values: torch.Tensor, wrt: list[torch.Tensor], *, retain: bool) -> list[torch.Tensor]:
    """One backward pass: d(Σ_batch values)/d(each tensor in wrt). Samples are independent in eval
    mode, so each sample's gradient is its own. Layers the target does not depend on get zeros."""
    grads = torch.autograd.grad(values.sum(), wrt, retain_graph=retain, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, wrt)]


def reduce(act: torch.Tensor, grad: Optional[torch.Tensor], atom: str, *, at=None, channels=None,
           vector=None) -> torch.Tensor:
    """Content for one atom kind.

    Activation (``grad`` is None): neuron → A; spatial → ‖A‖₂ over channels (magnitude);
    channel → mean over positions; whole → ‖A‖₂.
    Attribution: neuron → A·G; spatial → Σ_c A·G; channel → Σ_{x,y} A·G; whole → Σ A·G.
    ``at`` picks one position (x, y) or neuron (x, y, c); ``channels`` keeps a subset. Channel
    atoms with ``at`` are the channels at that position; spatial atoms with ``channels`` the map of
    those channels alone (both are what a linked selection asks for).
    direction (activation only) → the projection A·v at each position (or of the vector).
    """
    spatial = act.dim() == 4
    if atom == "gradient":
        return grad
    if spatial and at is not None and atom == "channel":
        # the channels at one position (a linked selection): activation or A·∇ at (x, y)
        x, y = at[0], at[1]
        out = act[:, :, y, x] if grad is None else (act * grad)[:, :, y, x]
        return out[:, list(channels)] if channels is not None else out
    if spatial and channels is not None and atom == "spatial":
        # the map of some channels only: their magnitude (activation) or Σ_{c in channels} A·∇
        idx = list(channels)
        out = act[:, idx].norm(dim=1) if grad is None else (act * grad)[:, idx].sum(dim=1)
        return out[:, at[1], at[0]] if at is not None else out
    if atom == "direction":
        v = torch.as_tensor(vector, dtype=act.dtype, device=act.device)
        return torch.einsum("bc...,c->b...", act, v)
    if grad is None:
        if atom == "neuron":
            out = act
        elif atom == "spatial":
            out = act.norm(dim=1) if spatial else act.abs()
        elif atom == "channel":
            out = act.mean(dim=(2, 3)) if spatial else act
        elif atom == "whole":
            out = act.flatten(1).norm(dim=1)
        else:
            raise ValueError(atom)
    else:
        prod = act * grad
        if atom == "neuron":
            out = prod
        elif atom == "spatial":
            out = prod.sum(dim=1) if spatial else prod
        elif atom == "channel":
            out = prod.sum(dim=(2, 3)) if spatial else prod
        elif atom == "whole":
            out = prod.flatten(1).sum(dim=1)
        else:
            raise ValueError(atom)
    if at is not None:
        if atom == "spatial":
            out = out[:, at[1], at[0]]
        elif atom == "neuron":
            out = out[:, at[2], at[1], at[0]]
    if channels is not None and atom in ("channel", "neuron"):
        out = out[:, list(channels)]
    return out


def path_gradient(model: nn.Module, x: torch.Tensor, layer: str, base: torch.Tensor, *, kind: str,
                  cls: Optional[int] = None, target_layer: Optional[str] = None, at=None,
                  predicted: Optional[torch.Tensor] = None, steps: int = 50, chunk: int = 16) -> torch.Tensor:
    """Mean over n = 0…N−1 of ∇f(A·n/N) at ``layer`` (the left Riemann sum of the article's
    path-integrated attribution). ``base`` is the layer's activation A for ``x`` (N images); multiply
    the result by A for the attribution. The path points are evaluated ``chunk`` at a time, batched
    (``chunk`` × N rows). ``layer`` may name one call of a module called more than once
    (``NAME@N``): only that call is replaced."""
    n = x.shape[0]
    total = torch.zeros_like(base)
    alphas = torch.arange(steps, dtype=base.dtype, device=base.device) / steps
    pos = None
    if kind == "norm" and at is None:
        pos = predicted  # caller passes the strongest positions (N, 2) here for norm targets
    for start in range(0, steps, chunk):
        a = alphas[start:start + chunk]
        k = a.numel()
        leaf: list[torch.Tensor] = []

        def scale(out: torch.Tensor, a=a, k=k, leaf=leaf) -> torch.Tensor:
            # path point j of image i is row j·n + i, as in ``xs``: A_i · a_j
            shape = (k,) + (1,) * base.dim()
            s = (base.detach().unsqueeze(0) * a.view(shape)).reshape(k * n, *base.shape[1:])
            s = s.requires_grad_(True)
            leaf.append(s)
            return s

        xs = x.detach().repeat(k, *([1] * (x.dim() - 1)))
        layers = [target_layer] if kind == "norm" else []
        with torch.enable_grad(), hooks(model, layers, replace={layer: scale}) as store:
            logits = logits_of(model(xs))
        if kind == "logit":
            pred = None if cls is not None else predicted.repeat(k)
            vals = target_values("logit", logits, {}, cls=cls, predicted=pred)
        else:
            t = store[target_layer]
            if at is not None:
                vals = t[:, :, at[1], at[0]].norm(dim=1)
            else:
                p = pos.repeat(k, 1)
                idx = torch.arange(t.shape[0], device=t.device)
                vals = t[idx, :, p[:, 1], p[:, 0]].norm(dim=1)
        (g,) = torch.autograd.grad(vals.sum(), leaf)  # one leaf: only the layer's one call is replaced
        total += g.reshape(k, n, *base.shape[1:]).sum(0)
    return total / steps
