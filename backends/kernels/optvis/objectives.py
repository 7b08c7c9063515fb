"""Objectives: what an image is optimised to maximise.

An :class:`Objective` maps the captured activations of a batch (``{layer: (B, C, H, W) or (B, C)}``)
to one score per batch element, a ``(B,)`` tensor. Objectives compose as in lucid:
``a + b``, ``a - b``, ``2 * a``, ``a * b`` (elementwise), ``-a``; ``batch=i`` puts an objective on
element ``i`` only, which is what lets many icons share one optimisation. Every constructor also
takes per-element parameters (a ``(B,)`` tensor of channels, a ``(B, C)`` matrix of directions), so
a batch of icons is one vectorised objective rather than a Python sum of B closures.

Definitions (those of lucid ``optvis/objectives.py`` and of the Activation Atlas article's notebooks):

* ``channel``: mean over positions of channel ``c``;
* ``neuron``: channel ``c`` at one position (the centre by default);
* ``direction``: mean over positions of ``(h·v) · max(0.1, cos(h, v)) ** p`` (p = 0: the dot product);
* ``direction_neuron``: the same at one position (the centre by default);
* ``direction_cossim_S``: the atlas icons' objective at one position:
  ``dot = mean_c(h_c · (vS)_c)``, ``cos = max(0.1, dot / (1e-4 + ‖h‖))``, score ``dot · cos ** p``,
  with ``S`` the whitening matrix (the inverse uncentred second moment of the layer's activations);
* ``group``: the direction of an NMF neuron group (its channel factor);
* ``diversity``: minus the mean cosine similarity between the Gram matrices of the batch's elements
  (a batch-level term, shared equally by the elements).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch

Scores = Callable[[dict[str, torch.Tensor]], torch.Tensor]
IntOrTensor = Union[int, Sequence[int], torch.Tensor]


class Objective:
    """A score per batch element, computed from captured activations; maximised.

    ``reads`` (set by :func:`channel` and :func:`neuron`, None for anything composed): ``(layer, c,
    rebuild)`` says that element i reads nothing but channel ``c[i]`` of ``layer``, and
    ``rebuild(columns)`` is the same objective on activations that hold only the channels read
    (element i's channel in column ``columns[i]``). The render loop uses it to compute only those
    channels of the layer (:func:`interpgram.backends.kernels.optvis.render.plan_slice`)."""

    def __init__(self, fn: Scores, layers: Sequence[str], name: str,
                 reads: Optional[tuple[str, IntOrTensor, Callable[[torch.Tensor], "Objective"]]] = None):
        self.fn = fn
        self.layers = tuple(dict.fromkeys(layers))
        self.name = name
        self.reads = reads

    def __call__(self, acts: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.fn(acts)

    def __repr__(self) -> str:
        return f"Objective({self.name})"

    # ---------------------------------------------------------------- algebra
    def __add__(self, other: Union["Objective", float]) -> "Objective":
        if isinstance(other, (int, float)):
            if other == 0:
                return self
            return Objective(lambda a: self(a) + other, self.layers, f"{self.name} + {other:g}")
        return Objective(lambda a: self(a) + other(a), self.layers + other.layers, f"{self.name} + {other.name}")

    __radd__ = __add__

    def __neg__(self) -> "Objective":
        return Objective(lambda a: -self(a), self.layers, f"-{self.name}")

    def __sub__(self, other: Union["Objective", float]) -> "Objective":
        return self + (-other)

    def __rsub__(self, other: float) -> "Objective":
        return (-self) + other

    def __mul__(self, other: Union["Objective", float]) -> "Objective":
        if isinstance(other, (int, float)):
            return Objective(lambda a: other * self(a), self.layers, f"{other:g}·{self.name}")
        return Objective(lambda a: self(a) * other(a), self.layers + other.layers, f"({self.name})·({other.name})")

    __rmul__ = __mul__

    @staticmethod
    def sum(objs: Sequence["Objective"]) -> "Objective":
        objs = list(objs)
        if not objs:
            raise ValueError("Objective.sum needs at least one objective")
        layers = tuple(l for o in objs for l in o.layers)
        return Objective(lambda a: sum(o(a) for o in objs), layers, " + ".join(o.name for o in objs))


# -------------------------------------------------------------------- helpers
def _on_batch(batch: Optional[int], per_element: Callable[[torch.Tensor], torch.Tensor], layer: str) -> Scores:
    """Scores of ``per_element`` on every element, or only on element ``batch`` (zeros elsewhere).

    Per-element parameters keep their meaning under ``batch=i``: element i uses the i-th one.
    """
    if batch is None:
        return lambda acts: per_element(acts[layer])

    def fn(acts: dict[str, torch.Tensor]) -> torch.Tensor:
        t = acts[layer]
        n = t.shape[0]
        if not -n <= batch < n:
            raise IndexError(f"objective targets batch element {batch}, but the batch has {n}")
        mask = torch.zeros(n, dtype=torch.float32, device=t.device)
        mask[batch % n] = 1.0
        return per_element(t).float() * mask
    return fn


def _index(c: IntOrTensor, n: int, device) -> torch.Tensor:
    idx = torch.as_tensor(c, device=device).long().reshape(-1)
    if idx.numel() == 1:
        return idx.expand(n)
    if idx.numel() != n:
        raise ValueError(f"{idx.numel()} per-element values for a batch of {n}")
    return idx


def _vectors(v: torch.Tensor, n: int, c: int, device) -> torch.Tensor:
    v = torch.as_tensor(v, device=device, dtype=torch.float32)
    if v.dim() == 1:
        v = v.unsqueeze(0)
    if v.shape[-1] != c:
        raise ValueError(f"a direction of {v.shape[-1]} values for a layer of {c} channels")
    if v.shape[0] == 1:
        return v.expand(n, c)
    if v.shape[0] != n:
        raise ValueError(f"{v.shape[0]} directions for a batch of {n}")
    return v


def _position(t: torch.Tensor, x: Optional[IntOrTensor], y: Optional[IntOrTensor]) -> torch.Tensor:
    """(B, C) activation vectors at (x, y) per element; the centre (W//2, H//2) by default."""
    if t.dim() == 2:
        return t
    n, _, h, w = t.shape
    xs = _index(w // 2 if x is None else x, n, t.device).clamp(0, w - 1)
    ys = _index(h // 2 if y is None else y, n, t.device).clamp(0, h - 1)
    return t[torch.arange(n, device=t.device), :, ys, xs]


def _spatial_mean(s: torch.Tensor) -> torch.Tensor:
    return s.flatten(1).mean(1) if s.dim() > 1 else s


def _dot_cossim(t: torch.Tensor, v: torch.Tensor, cossim_pow: float) -> torch.Tensor:
    """Per position: h·v · max(0.1, cos(h, v)) ** p; t (B, C, ...) and v (B, C)."""
    shape = (v.shape[0], v.shape[1]) + (1,) * (t.dim() - 2)
    vv = v.view(shape)
    dot = (t * vv).sum(1)
    if cossim_pow == 0:
        return dot
    cos = dot / (t.norm(dim=1) * vv.norm(dim=1) + 1e-6)
    return dot * cos.clamp(min=0.1) ** cossim_pow


# -------------------------------------------------------------------- objectives
def channel(layer: str, c: IntOrTensor, batch: Optional[int] = None) -> Objective:
    """Mean activation of channel ``c`` over positions (``c`` per element allowed)."""
    def per(t: torch.Tensor) -> torch.Tensor:
        idx = _index(c, t.shape[0], t.device)
        picked = t[torch.arange(t.shape[0], device=t.device), idx]
        return _spatial_mean(picked.float())
    reads = (layer, c, lambda columns: channel(layer, columns)) if batch is None else None
    return Objective(_on_batch(batch, per, layer), [layer], f"channel({layer}, {_show(c)})", reads)


def neuron(layer: str, c: IntOrTensor, x: Optional[IntOrTensor] = None, y: Optional[IntOrTensor] = None,
           batch: Optional[int] = None) -> Objective:
    """Channel ``c`` at position (x, y), the centre by default."""
    def per(t: torch.Tensor) -> torch.Tensor:
        v = _position(t.float(), x, y)
        return v[torch.arange(v.shape[0], device=v.device), _index(c, v.shape[0], v.device)]
    reads = (layer, c, lambda columns: neuron(layer, columns, x, y)) if batch is None else None
    return Objective(_on_batch(batch, per, layer), [layer], f"neuron({layer}, {_show(c)})", reads)


def direction(layer: str, v, batch: Optional[int] = None, cossim_pow: float = 0.0) -> Objective:
    """Mean over positions of (h·v)·max(0.1, cos)^p."""
    def per(t: torch.Tensor) -> torch.Tensor:
        t = t.float()
        return _spatial_mean(_dot_cossim(t, _vectors(v, t.shape[0], t.shape[1], t.device), cossim_pow))
    return Objective(_on_batch(batch, per, layer), [layer], f"direction({layer}{_pow(cossim_pow)})")


def direction_neuron(layer: str, v, x: Optional[IntOrTensor] = None, y: Optional[IntOrTensor] = None,
                     batch: Optional[int] = None, cossim_pow: float = 0.0) -> Objective:
    """(h·v)·max(0.1, cos)^p at one position, the centre by default."""
    def per(t: torch.Tensor) -> torch.Tensor:
        h = _position(t.float(), x, y)
        return _dot_cossim(h, _vectors(v, h.shape[0], h.shape[1], h.device), cossim_pow)
    return Objective(_on_batch(batch, per, layer), [layer], f"direction_neuron({layer}{_pow(cossim_pow)})")


def direction_cossim_S(layer: str, v, S: Optional[torch.Tensor] = None, x: Optional[IntOrTensor] = None,
                       y: Optional[IntOrTensor] = None, batch: Optional[int] = None,
                       cossim_pow: float = 2.0) -> Objective:
    """The activation atlas's whitened icon objective at one position: ``dot = mean_c(h_c · (vS)_c)``,
    ``cos = max(0.1, dot / (1e-4 + ‖h‖))``, score ``dot · cos ** cossim_pow`` (lucid's atlas notebooks)."""
    def per(t: torch.Tensor) -> torch.Tensor:
        h = _position(t.float(), x, y)
        vec = _vectors(v, h.shape[0], h.shape[1], h.device)
        if S is not None:
            vec = vec @ S.to(h.device, torch.float32)
        dot = (h * vec).mean(1)
        cos = (dot / (1e-4 + h.norm(dim=1))).clamp(min=0.1)
        return dot * cos ** cossim_pow
    name = "whitened " if S is not None else ""
    return Objective(_on_batch(batch, per, layer), [layer], f"{name}direction_cossim({layer}{_pow(cossim_pow)})")


def whitening(acts: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """S = inv(AᵀA / N), the inverse uncentred second moment of activation vectors A (N, C)."""
    a = acts.double().reshape(-1, acts.shape[-1])
    m = a.T @ a / a.shape[0]
    return torch.linalg.inv(m + eps * torch.eye(m.shape[0], dtype=m.dtype) * m.diagonal().mean()).float()


def group(layer: str, channel_factor, batch: Optional[int] = None, cossim_pow: float = 0.0) -> Objective:
    """The direction of an NMF neuron group: its channel factor (k rows for k elements allowed)."""
    obj = direction(layer, channel_factor, batch=batch, cossim_pow=cossim_pow)
    obj.name = f"group({layer})"
    return obj


def diversity(layer: str) -> Objective:
    """−(mean over pairs of the cosine similarity of the elements' Gram matrices), shared by all."""
    def fn(acts: dict[str, torch.Tensor]) -> torch.Tensor:
        t = acts[layer].float()
        n, c = t.shape[:2]
        flat = t.reshape(n, c, -1)
        grams = flat @ flat.transpose(1, 2)
        grams = grams.reshape(n, -1)
        grams = grams / grams.norm(dim=1, keepdim=True).clamp(min=1e-10)
        sim = grams @ grams.T
        total = (sim.sum() - sim.diagonal().sum()) / n
        return (-total / n).expand(n)
    return Objective(fn, [layer], f"diversity({layer})")


def _show(c) -> str:
    if isinstance(c, int):
        return str(c)
    t = torch.as_tensor(c).reshape(-1)
    return str(int(t[0])) if t.numel() == 1 else f"{t.numel()} channels"


def _pow(p: float) -> str:
    return f", cossim^{p:g}" if p else ""
