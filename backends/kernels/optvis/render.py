"""The render loop: optimise a batch of images so that an objective is as large as possible.

``render_vis`` runs one batched optimisation (Adam, lr 0.05 by default) under the robustness
transforms and returns the images with their final scores. With several ``attempts`` (independent
random starts) every attempt of every image is a row of one batch, and each attempt draws its own
transforms (attempt 0 those of a one-attempt render); attempts whose transformed images have the
same size share one forward pass. (When the attempts shared one transform stream, the best of two
class-atlas icons reached 0.69 of the separate attempts' mean objective: ``benchmarks/vs_old.py``.)
``race`` (1 by default) is the fraction of the steps after which each image keeps only its leading
attempt, by the objective of its untransformed image, with that row's Adam moments; at 1 every
attempt runs to the end and the best final image is kept, the article's recipe. Measured side by
side (``python benchmarks/icon_race.py``: 16 conv4 channel icons of the built-in model, 2 attempts,
256 steps, 2 CPU cores): race 0.5 ran 1.30× faster, its icons reaching 99.0% of the best-of-two
objective on average but 88.4% for the worst icon; 0.25 1.58× at 99.2% (worst 93.4%). An icon that
loses a tenth is visible, so it is not the default.

The forward pass stops at the deepest layer the objective reads. Where bfloat16 is native (cuda, a
CPU with AMX or AVX512-BF16: :func:`~interpgram.backends.execute.device.native_bfloat16`) the model
runs under bfloat16 autocast while the parameters, transforms and objective stay in float32
(``autocast="auto"``; ``"bfloat16"`` does it on any device, ``"off"`` never): measured on the built-in
model, icons optimised through a bfloat16 model reach the same float32-scored objective, 1.93× faster
on a Xeon with AMX, and 0.12× as fast on a CPU without native bfloat16, where auto leaves it off
(benchmarks/featurevis_autocast.py, tests/backends/kernels/optvis/test_optvis.py).

``render_icons`` renders many independent icons (one objective each): it groups them by layer and
objective kind into batched optimisations, splits a batch that does not fit in memory (an
out-of-memory halves it), and caches every icon on its own, keyed by the model, the icon, the
settings and the seed, so that any spec asking again for the same icon (a semantic dictionary, a
channel bar, ``interpgram sprites``) gets it from the cache. An icon's random start and the
transforms' random draws depend only on the seed and the icon, not on its batch. The optimisation
itself is not bit-for-bit independent of the batch on CPU: batched convolutions differ from
single ones by ~1e-6, and for some objectives (plain directions) a ReLU or max-pool flip grows that
into a visibly different local optimum after tens of steps. So the same seed gives the same icon
for the same batch on the same device, and the cache keeps whichever version was rendered first.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch import nn

from interpgram.backends.execute.cache import cache_key
from interpgram.backends.execute.device import native_bfloat16, pick_device, run_batched
from interpgram.backends.kernels.capture import capture_input, capture_until, parse_layer
from interpgram.backends.kernels.frozen import channels_last, frozen_copy
from interpgram.backends.kernels.optvis import objectives as O
from interpgram.backends.kernels.optvis.param import ImageParam
from interpgram.backends.kernels.optvis.transforms import apply, draw, normalize_steps
from interpgram.grammar.registry import Registry

Progress = Callable[[str, int, int], None]
AUTOCAST = ("auto", "bfloat16", "off")


@dataclass(frozen=True)
class IconSettings:
    """How icons are optimised (every value is a spec option of the featurevis presentations)."""

    size: Optional[int] = None  # px; None: the model's input size
    steps: int = 256
    lr: float = 0.05
    attempts: int = 1
    param: str = "fourier"
    decorrelate: bool = True
    transforms: Union[str, tuple] = "standard"
    relu_redirect: int = 16  # steps at the start with lucid's redirected ReLU gradient (0: off)
    race: float = 1.0  # attempts > 1: at this fraction of the steps keep each icon's leading attempt (1: all to the end)
    autocast: str = "auto"  # bfloat16 autocast of the model: auto (where bfloat16 is native) | bfloat16 | off

    def __post_init__(self):
        if self.autocast not in AUTOCAST:
            raise ValueError(f"autocast {self.autocast!r}: use one of {', '.join(AUTOCAST)}")
        if not 0.0 <= self.race <= 1.0:
            raise ValueError(f"race {self.race!r}: use a fraction of the steps from 0 to 1")

    def resolved(self, model_size: Sequence[int]) -> "IconSettings":
        size = self.size or int(model_size[0])
        steps = normalize_steps(self.transforms)
        return IconSettings(size, self.steps, self.lr, self.attempts, self.param, self.decorrelate, steps,
                            self.relu_redirect, self.race, self.autocast)

    def key(self) -> tuple:
        d = asdict(self)
        d["transforms"] = normalize_steps(self.transforms)
        d.pop("autocast")
        if self.attempts == 1:
            d.pop("race")  # no race with one attempt: the same icons as before the option existed
        else:
            d["draws"] = "per attempt"  # not the icons cached while the attempts shared one transform stream
        return tuple(sorted(d.items()))


@dataclass
class RenderResult:
    images: torch.Tensor  # (n, 3, size, size) in [0, 1], float32, CPU
    scores: torch.Tensor  # (n,) the objective of each final image (untransformed)
    seconds: float = 0.0
    history: list[float] = field(default_factory=list)  # mean objective per step (last attempt)


class _RedirectedReLU(torch.autograd.Function):
    """lucid's redirected ReLU gradient: where the true ReLU gradient of an element is all zero, let
    through the gradient that would raise negative inputs, so that optimisation can start.

    lucid computes three full ``where``s each step; here the true gradient is one multiply, and the
    redirected one is computed only for images whose true gradient is all zero (the same values:
    tests/backends/kernels/optvis/test_fast_paths.py compares it with lucid's formula). Every operation
    keeps the tensor's memory format: ``masked_fill`` and a scalar ``where`` return channels-first
    tensors from channels-last ones, which made every later layer of these steps convert back and
    forth (a redirected step cost about twice a plain one; now about the same)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.relu()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        relu_grad = grad * (x >= 0)
        dims = tuple(range(1, grad.dim()))
        dead = relu_grad.abs().amax(dim=dims) == 0 if dims else relu_grad == 0  # lucid: |relu_grad| == 0
        if not bool(dead.any()):
            return relu_grad
        redirected = grad - (x < 0) * grad.clamp(min=0)  # zero where a negative input is pushed lower
        relu_grad[dead] = redirected[dead]
        return relu_grad


def _seed_int(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


#: modules that act on each channel on its own (so channel c of their output needs only channel c of their input)
_CHANNELWISE = (nn.Identity, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.GELU, nn.ELU, nn.Hardswish, nn.Hardsigmoid,
                nn.Sigmoid, nn.Tanh, nn.Mish, nn.Softplus, nn.Dropout, nn.Dropout2d)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass
class LayerSlice:
    """Only the channels an objective reads, computed from the layer's input: the layer is one
    convolution (or linear map) followed by channel-wise modules, so channel c of its output is that
    convolution with weight row c, then the same modules. The rows (and an unfolded BatchNorm's
    statistics and affine) are taken once, when the slice is planned: the weights do not change while
    icons optimise."""

    layer: str
    head: nn.Module
    weight: torch.Tensor  # the head's rows ``columns`` (channels-last for a convolution)
    bias: Optional[torch.Tensor]
    tail: list  # channel-wise modules, or an eval-mode BatchNorm's (mean, var, weight, bias, eps) of ``columns``
    columns: torch.Tensor  # the channels computed, in order
    objective: O.Objective  # the objective on the (n, len(columns), ...) activations

    def __call__(self, x_in: torch.Tensor) -> torch.Tensor:
        if isinstance(self.head, nn.Linear):
            y = torch.nn.functional.linear(x_in, self.weight, self.bias)
        else:
            y = self.head._conv_forward(x_in, self.weight, self.bias)
        for m in self.tail:
            if isinstance(m, tuple):
                mean, var, w, b, eps = m
                y = torch.nn.functional.batch_norm(y, mean, var, w, b, False, 0.0, eps)
            else:
                y = m(y)  # a hook on it (the redirected ReLU) runs as on the whole layer
        return y


def _rows_of(t: Optional[torch.Tensor], columns: torch.Tensor) -> Optional[torch.Tensor]:
    return None if t is None else t.detach()[columns.to(t.device)]


def _flat(m: nn.Module) -> list:
    return [k for c in m.children() for k in (_flat(c) if type(c) is nn.Sequential else [c])]


def plan_slice(module: nn.Module, objective: O.Objective, rows: int) -> Optional[LayerSlice]:
    """A :class:`LayerSlice` where ``objective`` reads one channel per element of one layer that is a
    convolution (groups 1) or linear map followed only by channel-wise modules, and the channels read
    are at most half the layer's; None otherwise (the whole layer is computed). The icons are the
    same: ``python benchmarks/icon_slice.py`` (16 channel icons, 64 float32 steps, 2 CPU cores)
    measured 1.99×, 1.36× and 1.11× faster at conv2, conv3 and conv4 of the built-in model with images
    and scores equal to the whole layer's (difference 0); 1.52×, 1.19× and 1.07× with bfloat16 steps."""
    reads = getattr(objective, "reads", None)
    if reads is None or objective.layers != (reads[0],):
        return None
    layer, c, rebuild = reads
    if parse_layer(layer)[1] is not None:
        return None
    try:
        m = module.get_submodule(layer)
    except AttributeError:
        return None
    parts = [m] if isinstance(m, (nn.Conv2d, nn.Linear)) else _flat(m) if type(m) is nn.Sequential else []
    if not parts or not isinstance(parts[0], (nn.Conv2d, nn.Linear)):
        return None
    head, tail = parts[0], parts[1:]
    if isinstance(head, nn.Conv2d) and head.groups != 1:
        return None
    if not all(isinstance(t, _CHANNELWISE) or (isinstance(t, _BATCHNORM) and not t.training
                                              and t.running_mean is not None) for t in tail):
        return None
    out = head.out_channels if isinstance(head, nn.Conv2d) else head.out_features
    idx = torch.as_tensor(c).long().reshape(-1)
    if idx.numel() == 1:
        idx = idx.expand(rows)
    if idx.numel() != rows or idx.min() < 0 or idx.max() >= out:
        return None  # the objective itself reports the mismatch
    columns, inverse = torch.unique(idx, return_inverse=True)
    if 2 * columns.numel() > out:
        return None
    weight = _rows_of(head.weight, columns)
    if isinstance(head, nn.Conv2d):
        weight = channels_last(weight)
    steps = [(_rows_of(t.running_mean, columns), _rows_of(t.running_var, columns), _rows_of(t.weight, columns),
              _rows_of(t.bias, columns), t.eps) if isinstance(t, _BATCHNORM) else t for t in tail]
    return LayerSlice(layer, head, weight, _rows_of(head.bias, columns), steps, columns, rebuild(inverse))


def _capture(module: nn.Module, x: torch.Tensor, layers: Sequence[str], *, redirect: bool,
             autocast: str, sliced: Optional[LayerSlice] = None) -> dict[str, torch.Tensor]:
    """Forward ``x`` until every layer in ``layers`` has been seen; returns their outputs (float32).
    ``redirect``: lucid's redirected ReLU gradient (the first steps of an optimisation). ``sliced``:
    compute only its channels of its layer (which is then the only one in ``layers``)."""
    handles, inplace = [], []

    def relu_hook(m, inp, out):
        return _RedirectedReLU.apply(inp[0])

    try:
        if redirect:
            for m in module.modules():
                if isinstance(m, nn.ReLU):
                    if m.inplace:
                        inplace.append(m)
                        m.inplace = False
                    handles.append(m.register_forward_hook(relu_hook))
        on = autocast == "bfloat16" or (autocast == "auto" and native_bfloat16(x.device))
        ctx = torch.autocast(x.device.type, dtype=torch.bfloat16) if on else _null()
        with ctx:
            if sliced is not None:
                store = {sliced.layer: sliced(capture_input(module, channels_last(x), sliced.layer))}
            else:
                store = capture_until(module, channels_last(x), list(layers))
    finally:
        for h in handles:
            h.remove()
        for m in inplace:
            m.inplace = True
    store["input"] = x
    return {k: v.float() for k, v in store.items()}


def _row_scores(objective: O.Objective, acts: dict[str, torch.Tensor], images: torch.Tensor, n: int) -> torch.Tensor:
    """The objective of rows whose images are ``images`` (distinct): built for n images with per-image
    parameters, it scores row j as image ``images[j]``. Rows of images 0..n-1 in order are scored
    directly; other rows are placed at their images' places in zero-filled activations."""
    if images.numel() == n and bool((images == torch.arange(n, device=images.device)).all()):
        return objective(acts)
    full = {k: v.new_zeros((n,) + tuple(v.shape[1:])).index_copy(0, images, v) for k, v in acts.items()}
    return objective(full)[images]


class _Rows:
    """Which attempt and which image each row of the batch is: attempt-major (row a·n + i is attempt a of
    image i) until the race, then row i is image i's leading attempt."""

    def __init__(self, attempts: int, n: int, device):
        self.n, self.device = n, device
        self._set(torch.arange(attempts).repeat_interleave(n), torch.arange(n).repeat(attempts))

    def after_race(self, lead: torch.Tensor) -> None:
        self._set(lead.cpu(), torch.arange(self.n))

    def _set(self, attempt: torch.Tensor, image: torch.Tensor) -> None:
        self.attempt = attempt
        #: (attempt, its rows, their images) for every attempt that has rows; changes only at the race
        self.blocks = []
        for a in torch.unique(attempt).tolist():
            rows = (attempt == a).nonzero().flatten()
            self.blocks.append((a, rows.to(self.device), image[rows].to(self.device)))


def _step_scores(module, model, images_all: torch.Tensor, rows: _Rows, draws: list, steps_t, scorer: O.Objective,
                 layers: Sequence[str], *, redirect: bool, autocast: str, sliced: Optional[LayerSlice]) -> torch.Tensor:
    """One step's scores: each attempt's rows under that attempt's own transform draws; attempts whose
    transformed images have the same size share one forward pass."""
    blocks = rows.blocks
    whole = len(blocks) == 1
    xs = [apply(images_all if whole else images_all[r], steps_t, draws[a]) for a, r, _ in blocks]
    by_size: dict[tuple, list[int]] = {}
    for j, x in enumerate(xs):
        by_size.setdefault(tuple(x.shape), []).append(j)
    scores = []
    for members in by_size.values():
        x = xs[members[0]] if len(members) == 1 else torch.cat([xs[j] for j in members])
        acts = _capture(module, model.preprocess(x), layers, redirect=redirect, autocast=autocast, sliced=sliced)
        off = 0
        for j in members:
            k = blocks[j][1].numel()
            part = acts if len(members) == 1 else {key: v[off:off + k] for key, v in acts.items()}
            scores.append(_row_scores(scorer, part, blocks[j][2], rows.n))
            off += k
    return torch.cat(scores)


def _clean_scores(module, model, param: ImageParam, objective: O.Objective, rows: _Rows,
                  s: IconSettings, sliced: Optional[LayerSlice] = None) -> torch.Tensor:
    """The objective of every row's image as it is (no transforms), without gradients, in row order; in
    float32 whatever the steps ran in (these are the scores reported and the ones that pick the best)."""
    scorer = sliced.objective if sliced else objective
    with torch.no_grad():
        acts = _capture(module, model.preprocess(param().detach()), objective.layers, redirect=False,
                        autocast="off", sliced=sliced)
        out = torch.empty(rows.attempt.numel(), device=param.colour.device)
        for _a, r, images in rows.blocks:
            out[r] = _row_scores(scorer, {k: v[r] for k, v in acts.items()}, images, rows.n).detach().float()
        return out


def _keep_leaders(param: ImageParam, opt: torch.optim.Adam, scores: torch.Tensor, n: int) -> torch.optim.Adam:
    """The attempts race: keep each image's leading attempt (by ``scores``, attempt-major rows) and drop
    the others, carrying the kept rows' Adam moments over to a new optimiser so that their optimisation
    goes on exactly as it would have."""
    lead = scores.view(-1, n).argmax(0)
    keep = lead * n + torch.arange(n, device=lead.device)
    old, new = param.narrow(keep)
    state = opt.state.get(old, {})
    fresh = torch.optim.Adam([new], **{k: v for k, v in opt.defaults.items() if k in ("lr", "betas", "eps")})
    if state:
        fresh.state[new] = {k: (v[keep].clone() if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == old.shape[0]
                                else (v.clone() if torch.is_tensor(v) else v)) for k, v in state.items()}
    return fresh


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


DEFAULT_SETTINGS = IconSettings()  # frozen: one shared default is safe
#: icons per optimisation batch on a CPU when nothing says otherwise. A CPU gains nothing from a larger
#: batch while memory grows with it (benchmarks/icon_floor.py --batches 8,32, EfficientNet-Lite0 _blocks.10 at
#: 128 px, 2 cores: 51 icon-steps/s at 8 icons (772 MiB), 44 at 32 (1,983 MiB)); on a GPU, where a
#: batch does pay, every icon of a layer shares one optimisation (halved on out-of-memory).
CPU_ICON_BATCH = 16


def render_vis(model, objective: O.Objective, n: int, settings: IconSettings = DEFAULT_SETTINGS, *, seed: int = 0,
               seeds: Optional[Sequence[int]] = None, device: Union[str, torch.device] = "auto",
               progress: Optional[Progress] = None, frozen: bool = True, slice_channels: bool = True) -> RenderResult:
    """Optimise ``n`` images for ``objective`` (a (n,)-score objective); keep the best attempt per image.

    ``model`` is a :class:`~interpgram.backends.models.LoadedModel` (its ``preprocess`` maps the
    [0, 1] image to the network's input). ``seeds`` gives each image its own random start
    (default: derived from ``seed`` and the image's index). ``frozen``: run the network's frozen,
    BatchNorm-folded, channels-last copy (:mod:`~interpgram.backends.kernels.frozen`; the same values,
    fewer operations); False runs the module as loaded (for benchmarks that compare the two).
    ``slice_channels``: where the objective reads one channel per image of a convolution layer, compute
    only those channels of it (:func:`plan_slice`; the same values); False computes the whole layer.
    """
    t0 = time.perf_counter()
    s = settings.resolved(model.preprocess.size)
    dev = pick_device(device) if isinstance(device, str) else device
    module = frozen_copy(model, dev, objective.layers) if frozen else model.on(dev, torch.float32)
    sliced = plan_slice(module, objective, n) if slice_channels else None
    scorer = sliced.objective if sliced is not None else objective
    steps_t = normalize_steps(s.transforms)
    seeds = list(seeds) if seeds is not None else [_seed_int(seed, i) for i in range(n)]
    if len(seeds) != n:
        raise ValueError(f"{len(seeds)} seeds for {n} images")
    progress = progress or (lambda stage, i, total: None)
    A = s.attempts
    # every attempt of every image in one batch, attempt-major: row a·n + i is attempt a of image i; each
    # attempt draws its own transforms (attempt a from stream (seed, "transforms", a), attempt 0 the same
    # stream as a one-attempt render), so the attempts are independent starts as the article's are
    param = ImageParam(s.param, [_seed_int(x, a) for a in range(A) for x in seeds], s.size, s.size,
                       decorrelate=s.decorrelate).to(dev)
    opt = torch.optim.Adam(param.parameters(), lr=s.lr)
    gens = [torch.Generator().manual_seed(_seed_int(seed, "transforms", a)) for a in range(A)]
    rows = _Rows(A, n, dev)
    race_at = s.steps if A == 1 else min(s.steps, round(s.race * s.steps))
    history: list[float] = []
    for step in range(s.steps):
        if step == race_at and A > 1:
            clean = _clean_scores(module, model, param, objective, rows, s, sliced)
            opt = _keep_leaders(param, opt, clean, n)
            rows.after_race(clean.view(-1, n).argmax(0))
        opt.zero_grad(set_to_none=True)
        draws = [draw(steps_t, g) for g in gens]  # every stream advances every step, with rows or not
        scores = _step_scores(module, model, param(), rows, draws, steps_t, scorer, objective.layers,
                              redirect=step < s.relu_redirect, autocast=s.autocast, sliced=sliced)
        (-scores.sum()).backward()
        opt.step()
        history.append(float(scores.detach().mean()))
        progress("optimising", step + 1, s.steps)
    final = _clean_scores(module, model, param, objective, rows, s, sliced)
    with torch.no_grad():
        img = param().detach()
    per_image = final.view(-1, n)  # attempt-major until the race, one row per image after it
    best = per_image.argmax(0)  # each image's best attempt (the only one after the race)
    pick = best * n + torch.arange(n, device=best.device)
    best_img, best_score = img[pick], final[pick]
    return RenderResult(best_img.float().cpu(), best_score.float().cpu(), time.perf_counter() - t0, history)


# ------------------------------------------------------------------------ many icons
@dataclass(frozen=True)
class Icon:
    """One icon to render: an objective kind on a layer, with its parameters.

    kind: ``channel`` (index), ``neuron`` (index, centre position), ``direction`` (vector,
    mean over positions), ``direction_neuron`` (vector at the centre), ``atlas`` (the activation
    atlas's whitened cosine-power objective at the centre; ``vector`` is already whitened, v·S).
    """

    layer: str
    kind: str
    index: Optional[int] = None
    vector: Optional[tuple[float, ...]] = None
    cossim_pow: float = 0.0

    def identity(self) -> tuple:
        v = None if self.vector is None else hashlib.sha256(
            torch.tensor(self.vector, dtype=torch.float32).numpy().tobytes()).hexdigest()[:24]
        return (self.layer, self.kind, self.index, v, float(self.cossim_pow))

    @staticmethod
    def from_vector(layer: str, kind: str, v: torch.Tensor, cossim_pow: float = 0.0) -> "Icon":
        return Icon(layer, kind, vector=tuple(float(x) for x in v.detach().float().cpu().reshape(-1)),
                    cossim_pow=cossim_pow)


IconObjective = Callable[[Sequence["Icon"]], O.Objective]
ICON_OBJECTIVES: Registry[IconObjective] = Registry("icon kind", group="interpgram.icon_objectives")


def icon_kind(name: str, *, replace: bool = False) -> Callable[[IconObjective], IconObjective]:
    """Decorator: ``fn(icons) -> Objective`` builds ONE vectorised objective for a batch of icons of
    kind ``name`` (all of one layer and cosine power; element ``i`` of the batch optimises icon ``i``)."""
    def deco(fn: IconObjective) -> IconObjective:
        ICON_OBJECTIVES.register(name, fn, replace=replace)
        return fn
    return deco


def _indices(icons: Sequence["Icon"]) -> torch.Tensor:
    return torch.tensor([i.index for i in icons])


def _vectors(icons: Sequence["Icon"]) -> torch.Tensor:
    return torch.tensor([i.vector for i in icons], dtype=torch.float32)


@icon_kind("channel")
def _channel(icons):
    return O.channel(icons[0].layer, _indices(icons))


@icon_kind("neuron")
def _neuron(icons):
    return O.neuron(icons[0].layer, _indices(icons))


@icon_kind("direction")
def _direction(icons):
    return O.direction(icons[0].layer, _vectors(icons), cossim_pow=icons[0].cossim_pow)


@icon_kind("direction_neuron")
def _direction_neuron(icons):
    return O.direction_neuron(icons[0].layer, _vectors(icons), cossim_pow=icons[0].cossim_pow)


@icon_kind("atlas")
def _atlas(icons):  # v·S precomputed: the same objective as direction_cossim_S(v, S)
    return O.direction_cossim_S(icons[0].layer, _vectors(icons), None, cossim_pow=icons[0].cossim_pow)


def icon_objective(icons: Sequence[Icon]) -> O.Objective:
    """One vectorised objective for icons of the same layer, kind and cosine power (the kind's unit)."""
    first = icons[0]
    if any((i.layer, i.kind, i.cossim_pow) != (first.layer, first.kind, first.cossim_pow) for i in icons):
        raise ValueError("icon_objective needs icons of one layer, kind and cossim_pow")
    if first.kind not in ICON_OBJECTIVES:
        raise ValueError(f"unknown icon kind {first.kind!r} (known: {', '.join(ICON_OBJECTIVES.names())})")
    return ICON_OBJECTIVES[first.kind](icons)


def icon_cache_key(model_digest: str, icon: Icon, settings: IconSettings, seed: int) -> str:
    return cache_key(model=model_digest, icon=repr(icon.identity()), settings=repr(settings.key()), seed=seed,
                     what="icon")


@dataclass
class IconStats:
    rendered: int = 0
    cached: int = 0
    batches: int = 0
    halvings: int = 0
    seconds: float = 0.0


def render_icons(model, icons: Sequence[Icon], settings: IconSettings = DEFAULT_SETTINGS, *, seed: int = 0,
                 cache=None, device: Union[str, torch.device] = "auto", batch_size: Optional[int] = None,
                 progress: Optional[Progress] = None, stats: Optional[IconStats] = None) -> list[RenderResult]:
    """Render every icon (duplicates once), in batched optimisations grouped by layer and kind.

    Returns one :class:`RenderResult` with n = 1 per icon, in order. ``cache`` is a
    :class:`~interpgram.backends.execute.cache.ResultCache` (or None).
    """
    t0 = time.perf_counter()
    stats = stats if stats is not None else IconStats()
    s = settings.resolved(model.preprocess.size)
    device = pick_device(device) if isinstance(device, str) else device
    if batch_size is None and device.type == "cpu":
        batch_size = CPU_ICON_BATCH
    progress = progress or (lambda stage, i, total: None)
    unique: dict[tuple, Icon] = {}
    for ic in icons:
        unique.setdefault(ic.identity(), ic)
    done: dict[tuple, RenderResult] = {}
    todo: list[Icon] = []
    for ident, ic in unique.items():
        hit = cache.get(icon_cache_key(model.digest, ic, s, seed)) if cache is not None else None
        if hit is not None:
            done[ident] = RenderResult(hit["image"].unsqueeze(0), hit["score"].reshape(1))
            stats.cached += 1
        else:
            todo.append(ic)
    groups: dict[tuple, list[Icon]] = {}
    for ic in todo:
        groups.setdefault((ic.layer, ic.kind, ic.cossim_pow), []).append(ic)
    total_icons = len(todo)
    finished = 0
    for members in groups.values():
        def one_batch(start: int, stop: int, members=members, before=finished) -> RenderResult:
            part = members[start:stop]

            def report(stage: str, i: int, n: int) -> None:
                progress(f"icons {before + start + 1}-{before + stop} of {total_icons}", i, n)

            stats.batches += 1
            return render_vis(model, icon_objective(part), len(part), s, seed=seed,
                              seeds=[_seed_int(seed, ic.identity()) for ic in part], device=device,
                              progress=report)

        def halved(size: int) -> None:
            stats.halvings += 1

        parts = run_batched(one_batch, len(members), batch_size, on_halve=halved)
        images = torch.cat([p.images for p in parts])
        scores = torch.cat([p.scores for p in parts])
        for j, ic in enumerate(members):
            r = RenderResult(images[j:j + 1], scores[j:j + 1])
            done[ic.identity()] = r
            if cache is not None:
                cache.put(icon_cache_key(model.digest, ic, s, seed), {"image": images[j], "score": scores[j]})
        finished += len(members)
        stats.rendered += len(members)
    stats.seconds += time.perf_counter() - t0
    return [done[ic.identity()] for ic in icons]
