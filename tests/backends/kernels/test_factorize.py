"""NMF in torch, checked against scikit-learn, and the neuron-group helpers built on it."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.decomposition import NMF
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from interpgram.backends.kernels.factorize import NMFResult, group_attribution, neuron_groups, nmf


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def low_rank_plus_noise(n=256, c=64, rank=6, noise=0.05, seed=0) -> torch.Tensor:
    g = _gen(seed)
    A = torch.rand(n, rank, generator=g, dtype=torch.float64)
    B = torch.rand(rank, c, generator=g, dtype=torch.float64)
    return A @ B + noise * torch.rand(n, c, generator=g, dtype=torch.float64)


def relu_like(n=196, c=528, seed=1) -> torch.Tensor:
    """Like a 14×14×528 post-ReLU activation: correlated channels, about 30% of entries non-zero."""
    g = _gen(seed)
    z = torch.randn(n, 32, generator=g, dtype=torch.float64) @ torch.randn(32, c, generator=g, dtype=torch.float64)
    return (z / 4 - 0.8).clamp(min=0)


MATRICES = {
    "lowrank256x64": low_rank_plus_noise,
    "relu196x528": relu_like,  # wide: the randomized SVD works on the transpose
    "lowrank_wide40x300": lambda: low_rank_plus_noise(40, 300, rank=4, noise=0.2, seed=3),
}


def sklearn_nmf(X: torch.Tensor, k: int, max_iter: int, init: str = "nndsvda", tol: float = 1e-4) -> NMF:
    model = NMF(n_components=k, init=init, max_iter=max_iter, tol=tol, random_state=0)
    # One BLAS/OpenMP thread: on a shared 2-core machine, spinning thread pools can make a 10 ms fit
    # take seconds.
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit_transform(X.numpy())
    return model


@pytest.mark.parametrize(
    "name,k,dtype",
    [
        ("lowrank256x64", 6, torch.float64),
        ("lowrank256x64", 10, torch.float32),  # k above the planted rank: noise components
        ("relu196x528", 6, torch.float32),
        ("relu196x528", 3, torch.float64),
        ("lowrank_wide40x300", 5, torch.float64),
    ],
)
def test_error_within_2_percent_of_sklearn(name, k, dtype):
    X = MATRICES[name]().to(dtype)
    W, H, err, n_iter = nmf(X, k, max_iter=200)
    ref = sklearn_nmf(X, k, max_iter=200)

    assert W.shape == (X.shape[0], k) and H.shape == (k, X.shape[1])
    assert W.dtype == dtype and H.dtype == dtype
    assert (W >= 0).all() and (H >= 0).all()
    assert 1 <= n_iter <= 200
    # err is the Frobenius norm of the residual, the quantity sklearn reports as reconstruction_err_.
    assert err == pytest.approx(float(torch.linalg.matrix_norm(X.double() - (W @ H).double())), rel=1e-5)
    assert err <= 1.02 * ref.reconstruction_err_, (err, ref.reconstruction_err_)
    # ... and it actually explains the data (a trivial W = H = 0 has error ‖X‖).
    assert err < 0.9 * float(torch.linalg.matrix_norm(X))


@pytest.mark.parametrize("init", ["nndsvda", "nndsvd", "nndsvdar", "random"])
def test_float64_matches_sklearn_step_for_step(init):
    """Same initialisation draws, same coordinate-descent sweeps, same stopping rule: in float64 the
    factors themselves agree with scikit-learn's, not just the error. k=8 > the planted rank 5, so
    three components start from noise singular vectors, where only the same randomized SVD (same
    probe draws for the same seed) gives the same start."""
    X = low_rank_plus_noise(120, 48, rank=5, noise=0.1, seed=7)
    W, H, err, n_iter = nmf(X, 8, max_iter=150, init=init)
    model = NMF(n_components=8, init=init, max_iter=150, random_state=0)
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        W_sk = model.fit_transform(X.numpy())
    assert n_iter == model.n_iter_
    assert err == pytest.approx(model.reconstruction_err_, rel=1e-7)
    np.testing.assert_allclose(H.numpy(), model.components_, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(W.numpy(), W_sk, rtol=1e-5, atol=1e-8)


def test_stops_on_tol_and_runs_longer_with_smaller_tol():
    X = relu_like(seed=4)
    _, _, err_loose, it_loose = nmf(X, 4, tol=1e-2, max_iter=400)
    _, _, err_tight, it_tight = nmf(X, 4, tol=1e-5, max_iter=400)
    assert it_loose < it_tight
    assert err_tight <= err_loose
    _, _, _, it_all = nmf(X, 4, tol=0.0, max_iter=25)
    assert it_all == 25


def test_same_seed_identical_output():
    X = relu_like(seed=5).float()
    for init in ("nndsvda", "random"):
        a = nmf(X, 5, seed=3, init=init, max_iter=60)
        b = nmf(X, 5, seed=3, init=init, max_iter=60)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert a[2] == b[2] and a[3] == b[3]
    # The seed is a real input of the randomized SVD and of the random init.
    c = nmf(X, 5, seed=4, init="random", max_iter=60)
    assert not torch.equal(a[0], c[0])


def test_float32_and_float64_agree():
    X = low_rank_plus_noise(seed=2)
    W64, H64, e64, _ = nmf(X, 6, max_iter=100)
    W32, H32, e32, _ = nmf(X.float(), 6, max_iter=100)
    assert W64.dtype == torch.float64 and W32.dtype == torch.float32
    assert e32 == pytest.approx(e64, rel=1e-3)
    torch.testing.assert_close((W32 @ H32).double(), W64 @ H64, rtol=1e-2, atol=1e-2)


def test_other_input_dtypes():
    X = (low_rank_plus_noise(64, 32, seed=8) * 10).round()
    W, H, _, _ = nmf(X.to(torch.int64), 3, max_iter=20)
    assert W.dtype == torch.float64  # integers are factorised in float64, like sklearn
    W, H, _, _ = nmf(X.to(torch.float16), 3, max_iter=20)
    assert W.dtype == torch.float32  # half precision is computed in float32
    assert (W >= 0).all() and (H >= 0).all()


def test_zero_matrix_gives_zero_factors():
    W, H, err, n_iter = nmf(torch.zeros(10, 6), 2)
    assert err == 0.0 and n_iter == 1
    assert not W.any() and not H.any()


@pytest.mark.parametrize(
    "X,k,kw,match",
    [
        (-torch.rand(8, 5), 2, {}, "non-negative.*minimum"),
        (torch.tensor([[1.0, float("nan")], [0.5, 1.0]]), 1, {}, "NaN"),
        (torch.tensor([[1.0, float("inf")], [0.5, 1.0]]), 1, {}, "infinite"),
        (torch.rand(8, 5), 0, {}, "k must be >= 1"),
        (torch.rand(8, 5), 6, {}, r"larger than min\(positions, channels\)"),
        (torch.rand(3, 9), 4, {}, r"min\(3, 9\) = 3"),
        (torch.rand(8, 5), 2, {"init": "svd"}, "unknown init"),
        (torch.rand(8, 5), 2, {"max_iter": 0}, "max_iter"),
        (torch.rand(8, 5), 2, {"tol": -1.0}, "tol"),
        (torch.rand(2, 8, 5), 2, {}, "2-D"),
    ],
)
def test_bad_input_raises_clear_value_error(X, k, kw, match):
    with pytest.raises(ValueError, match=match):
        nmf(X, k, **kw)


def test_bad_types_raise_type_error():
    with pytest.raises(TypeError, match="torch.Tensor"):
        nmf(np.ones((4, 4)), 2)
    with pytest.raises(TypeError, match="k must be an int"):
        nmf(torch.ones(4, 4), 2.0)


# ---------------------------------------------------------------------------------------------------
# neuron_groups


def planted_groups(C=12, h=6, w=9, seed=0):
    """An activation made of 3 groups, each a bump at a known (y, x) with its own channel pattern,
    listed in an order that is NOT their x order."""
    g = _gen(seed)
    xs, ys = [7, 1, 4], [2, 4, 1]
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    chans = torch.zeros(3, C, dtype=torch.float64)
    chans[0, 0:4] = torch.rand(4, generator=g, dtype=torch.float64) + 0.5
    chans[1, 4:8] = torch.rand(4, generator=g, dtype=torch.float64) + 0.5
    chans[2, 8:12] = torch.rand(4, generator=g, dtype=torch.float64) + 0.5
    maps = torch.stack([torch.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 2.0) for x, y in zip(xs, ys, strict=True)])
    act = torch.einsum("khw,kc->chw", maps, chans)
    return act, maps, chans, xs


def test_neuron_groups_recovers_planted_groups_in_x_order():
    act, maps, chans, xs = planted_groups()
    res = neuron_groups(act, 3)
    assert isinstance(res, NMFResult)
    assert res.spatial.shape == (3, 6, 9) and res.channels.shape == (3, 12)
    assert (res.spatial >= 0).all() and (res.channels >= 0).all()
    assert res.reconstruction_error < 1e-3 * float(act.norm())
    order = np.argsort(xs)  # planted groups by x: x=1, 4, 7
    for i, j in enumerate(order):
        peak = int(res.spatial[i].argmax())
        assert peak % 9 == xs[j]  # column of the peak
        cos = torch.nn.functional.cosine_similarity(res.channels[i], chans[j], dim=0)
        assert cos > 0.999


def test_neuron_groups_sorted_by_peak_x_on_relu_activation():
    act = relu_like(n=14 * 14, c=64, seed=9).float().T.reshape(64, 14, 14)
    res = neuron_groups(act, 6)
    peak_x = res.spatial.reshape(6, -1).argmax(dim=1) % 14
    assert torch.all(peak_x[1:] >= peak_x[:-1]), peak_x
    # Same factorisation as nmf on positions × channels, only permuted.
    W, H, err, _ = nmf(act.permute(1, 2, 0).reshape(196, 64), 6)
    assert res.reconstruction_error == err
    assert sorted(map(tuple, res.channels.tolist())) == sorted(map(tuple, H.tolist()))
    # Accepts a batch of one.
    res1 = neuron_groups(act[None], 6)
    assert torch.equal(res1.spatial, res.spatial)


def test_neuron_groups_sign_handling():
    g = _gen(11)
    attr = torch.randn(8, 5, 6, generator=g, dtype=torch.float64)
    X = attr.permute(1, 2, 0).reshape(30, 8)
    for sign, Xs in [("positive", X.clamp(min=0)), ("negative", (-X).clamp(min=0)), ("abs", X.abs())]:
        res = neuron_groups(attr, 3, of="attribution", sign=sign, max_iter=50)
        _, _, err, _ = nmf(Xs, 3, max_iter=50)
        assert res.reconstruction_error == err
    default = neuron_groups(attr, 3, of="attribution", max_iter=50)
    positive = neuron_groups(attr, 3, of="attribution", sign="positive", max_iter=50)
    assert torch.equal(default.spatial, positive.spatial) and torch.equal(default.channels, positive.channels)

    # a signed activation without an explicit sign: its positive and negative parts side by side
    # (tests/backends/kernels/test_signed_groups.py checks the numbers against scikit-learn)
    auto = neuron_groups(attr, 3, max_iter=50)
    split = neuron_groups(attr, 3, sign="split", max_iter=50)
    assert auto.sign == "split" and auto.minimum == float(attr.min()) < 0
    assert torch.equal(auto.channels, split.channels) and (auto.channels < 0).any()
    res = neuron_groups(attr, 3, sign="abs", max_iter=50)  # explicit sign: accepted
    assert (res.spatial >= 0).all()
    with pytest.raises(ValueError, match="of must be"):
        neuron_groups(attr.abs(), 3, of="gradient")
    with pytest.raises(ValueError, match="sign must be"):
        neuron_groups(attr, 3, of="attribution", sign="both")
    with pytest.raises(ValueError, match=r"\(C, h, w\)"):
        neuron_groups(attr.abs()[0], 2)


# ---------------------------------------------------------------------------------------------------
# group_attribution


def test_group_attribution_hand_computed():
    # k=2 groups, C=2 channels, a 1×2 image.
    res = NMFResult(
        spatial=torch.tensor([[[1.0, 0.0]], [[0.5, 2.0]]]),  # (k=2, h=1, w=2)
        channels=torch.tensor([[1.0, 2.0], [0.0, 3.0]]),  # (k=2, C=2)
        reconstruction_error=0.0,
        n_iter=1,
    )
    grad = torch.tensor([[[1.0, -1.0]], [[0.5, 2.0]]])  # (C=2, h=1, w=2)
    # group 0: spatial (1, 0), channels (1, 2): 1*1*1 + 1*2*0.5 + 0 = 2.0
    # group 1: spatial (0.5, 2), channels (0, 3): 3*(0.5*0.5 + 2*2) = 12.75
    out = group_attribution(res, grad)
    torch.testing.assert_close(out, torch.tensor([2.0, 12.75]))


def test_group_attribution_matches_einsum_and_sums_to_grad_times_reconstruction():
    act, _, _, _ = planted_groups(seed=3)
    res = neuron_groups(act, 3)
    grad = torch.randn(act.shape, generator=_gen(12), dtype=torch.float64)
    out = group_attribution(res, grad)
    direct = torch.einsum("khw,kc,chw->k", res.spatial, res.channels, grad)
    torch.testing.assert_close(out, direct)
    # Groups split the gradient × activation of the reconstruction; the planted act is exactly rank 3.
    recon = torch.einsum("khw,kc->chw", res.spatial, res.channels)
    torch.testing.assert_close(out.sum(), (recon * grad).sum())
    torch.testing.assert_close(out.sum(), (act * grad).sum(), rtol=1e-3, atol=1e-3)
    # Invariant to how NMF splits scale between a group's spatial map and channel vector.
    s = torch.tensor([2.0, 0.1, 7.0], dtype=torch.float64)
    rescaled = NMFResult(res.spatial * s[:, None, None], res.channels / s[:, None], 0.0, 0)
    torch.testing.assert_close(group_attribution(rescaled, grad), out)
    with pytest.raises(ValueError, match="shape"):
        group_attribution(res, grad[:, :-1])
