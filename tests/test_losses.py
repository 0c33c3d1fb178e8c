"""cross_entropy, mse_loss, log_softmax, softmax against torch 2.13.0: values and gradients
(through rnnkit.value_and_grad) over reduction x ignore_index x weight x label_smoothing x
input rank, plus properties that always hold."""

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import rnnkit
from rnnkit.nn import functional as F

from helpers import assert_close, to_numpy

TOL = {np.float64: {"rtol": 1e-9, "atol": 1e-12}, np.float32: {"rtol": 1e-4, "atol": 1e-6}}
C = 4
SHAPES = {1: (C,), 2: (6, C), 3: (3, C, 5), 4: (2, C, 3, 2)}  # input shapes by rank


def make_target(rng, input_shape, ignore):
    shape = () if len(input_shape) == 1 else (input_shape[0],) + input_shape[2:]
    t = rng.integers(0, C, size=shape)
    if ignore is not None and t.ndim:
        t.flat[::3] = ignore  # some elements ignored, never all
    elif ignore is not None:
        t = np.array((ignore + 1) % C)  # unbatched: one element, so not the ignored one
    return t


@pytest.fixture
def TF(torch):
    return torch.nn.functional


def ce_pair(torch, x, t, dtype, **kw):
    """Loss values, and the gradient of their sum for the input, against torch's
    (class weights are constants: torch does not differentiate them)."""
    TF = torch.nn.functional
    x_t = torch.tensor(x, requires_grad=True)
    w = kw.pop("weight", None)
    w_t = None if w is None else torch.tensor(w)
    loss_t = TF.cross_entropy(x_t, torch.tensor(t), weight=w_t, **kw)
    loss_t.sum().backward()
    loss, dx = rnnkit.value_and_grad(
        lambda _, x: F.cross_entropy(x, t, weight=w, **kw).sum(), argnums=1
    )(None, x)
    values = to_numpy(
        TF.cross_entropy(
            torch.tensor(x), torch.tensor(t), weight=None if w is None else torch.tensor(w), **kw
        )
    )
    ours = F.cross_entropy(x, t, weight=w, **kw)
    assert_close(ours, values, **TOL[dtype])
    assert np.asarray(ours).dtype == dtype
    assert_close(loss, loss_t.sum().item(), **TOL[dtype])
    assert_close(dx, to_numpy(x_t.grad), **TOL[dtype])


GRID = list(
    itertools.product(
        ["mean", "sum", "none"],  # reduction
        [None, 1, -100],  # ignore_index present in the targets (None: not present)
        [False, True],  # class weights
        [0.0, 0.2],  # label_smoothing
        [1, 2, 3, 4],  # input rank
    )
)


@pytest.mark.parametrize("reduction,ignore,weighted,smoothing,rank", GRID)
def test_cross_entropy_matches_torch(reduction, ignore, weighted, smoothing, rank, rng, torch):
    dtype = np.float64
    x = (3 * rng.standard_normal(SHAPES[rank])).astype(dtype)
    t = make_target(rng, SHAPES[rank], ignore)
    kw = {"reduction": reduction, "label_smoothing": smoothing}
    if ignore is not None:
        kw["ignore_index"] = ignore
    if weighted:
        kw["weight"] = rng.uniform(0.2, 2.0, C).astype(dtype)
    ce_pair(torch, x, t, dtype, **kw)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_cross_entropy_float32_and_large_logits(reduction, rank, rng, torch):
    x = (rng.standard_normal(SHAPES[rank]) * 50 + 1000).astype(np.float32)  # exp overflows
    t = make_target(rng, SHAPES[rank], 2)
    ce_pair(
        torch,
        x,
        t,
        np.float32,
        reduction=reduction,
        ignore_index=2,
        label_smoothing=0.1,
        weight=rng.uniform(0.5, 1.5, C).astype(np.float32),
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_probability_targets(reduction, smoothing, weighted, rng, torch):
    x = rng.standard_normal((5, C, 2))
    p = rng.uniform(size=(5, C, 2))
    p /= p.sum(axis=1, keepdims=True)
    kw = {"reduction": reduction, "label_smoothing": smoothing}
    if weighted:
        kw["weight"] = rng.uniform(0.2, 2.0, C)
    ce_pair(torch, x, p, np.float64, **kw)


def test_cross_entropy_all_ignored_mean_is_nan_like_torch(torch, TF):
    x, t = np.zeros((2, 3)), np.array([-100, -100])
    expected = TF.cross_entropy(torch.tensor(x), torch.tensor(t)).item()
    assert np.isnan(expected)
    assert np.isnan(F.cross_entropy(x, t))  # 0 / 0, silently, as torch
    assert F.cross_entropy(x, t, reduction="sum") == 0


def test_cross_entropy_errors():
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"target must have shape \(N,\) = \(2,\).*got \(3,\)"):
        F.cross_entropy(x, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"target must hold indices in \[0, 3\), got 3"):
        F.cross_entropy(x, np.array([0, 3]))
    with pytest.raises(ValueError, match=r"weight must have shape \(C,\) = \(3,\)"):
        F.cross_entropy(x, np.array([0, 1]), weight=np.ones(2))
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(x, np.array([0, 1]), reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        F.cross_entropy(x, np.array([0, 1]), label_smoothing=1.5)


# ---------------------------------------------------------------- mse_loss


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss_matches_torch(dtype, reduction, rng, torch, TF):
    x = rng.standard_normal((4, 3, 2)).astype(dtype)
    y = rng.standard_normal((4, 3, 2)).astype(dtype)
    x_t, y_t = torch.tensor(x, requires_grad=True), torch.tensor(y, requires_grad=True)
    loss_t = TF.mse_loss(x_t, y_t, reduction=reduction)
    (loss_t**3).sum().backward()
    assert_close(F.mse_loss(x, y, reduction=reduction), to_numpy(loss_t), **TOL[dtype])
    loss, (dx, dy) = rnnkit.value_and_grad(
        lambda _, x, y: (F.mse_loss(x, y, reduction=reduction) ** 3).sum(), argnums=(1, 2)
    )(None, x, y)
    assert_close(loss, (loss_t**3).sum().item(), **TOL[dtype])
    assert_close(dx, to_numpy(x_t.grad), **TOL[dtype])
    assert_close(dy, to_numpy(y_t.grad), **TOL[dtype])


def test_mse_loss_warns_on_broadcast_like_torch():
    with pytest.warns(UserWarning, match="different to the input size"):
        F.mse_loss(np.zeros((3, 1)), np.zeros(3))


# ---------------------------------------------------------------- (log_)softmax


@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("which", ["log_softmax", "softmax"])
def test_softmaxes_match_torch(dim, which, rng, torch, TF):
    x = rng.standard_normal((3, 4, 5)) * 20
    x[0, 0, 0] = 800.0  # exp would overflow without the shift
    g = rng.standard_normal((3, 4, 5))
    x_t = torch.tensor(x, requires_grad=True)
    out_t = getattr(TF, which)(x_t, dim=dim)
    (out_t * torch.tensor(g)).sum().backward()
    fn = getattr(F, which)
    assert_close(fn(x, dim=dim), to_numpy(out_t))
    dx = rnnkit.grad(lambda _, x: (fn(x, dim) * g).sum(), argnums=1)(None, x)
    assert_close(dx, to_numpy(x_t.grad))


def test_log_softmax_of_minus_inf_row_and_implicit_dim_warning(torch, TF):
    x = np.array([[-np.inf, 0.0], [1.0, 2.0]])
    expected = to_numpy(TF.log_softmax(torch.tensor(x), dim=1))
    assert_close(F.log_softmax(x, dim=1), expected)
    with pytest.warns(UserWarning, match="Implicit dimension choice"):
        F.softmax(np.zeros((2, 3)))


LOGITS = hnp.arrays(
    np.float64,
    hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=6),
    elements=st.floats(-1e3, 1e3),
)


@given(LOGITS, st.floats(0.0, 1.0))
def test_cross_entropy_properties(x, smoothing):
    """Shifting every logit of a row changes nothing; the loss is at least the smoothing
    floor, and 'sum' of 'none' equals 'sum' (torch's values: the next test)."""
    N, C_ = x.shape
    t = np.arange(N) % C_
    none = F.cross_entropy(x, t, reduction="none", label_smoothing=smoothing)
    assert np.all(none >= -1e-9)
    assert_close(
        none.sum(),
        F.cross_entropy(x, t, reduction="sum", label_smoothing=smoothing),
        rtol=1e-9,
        atol=1e-9,
    )
    shifted = F.cross_entropy(x + 17.0, t, reduction="none", label_smoothing=smoothing)
    assert_close(shifted, none, rtol=1e-6, atol=1e-6)


@given(LOGITS, st.floats(0.0, 1.0))
def test_cross_entropy_of_drawn_logits_matches_torch(torch, x, smoothing):
    """The property test's drawn logits give torch's per-element losses."""
    N, C_ = x.shape
    t = np.arange(N) % C_
    none = F.cross_entropy(x, t, reduction="none", label_smoothing=smoothing)
    expected = torch.nn.functional.cross_entropy(
        torch.tensor(x), torch.tensor(t), reduction="none", label_smoothing=smoothing
    )
    assert_close(none, to_numpy(expected), rtol=1e-9, atol=1e-9)


@given(
    hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=1, max_dims=3, max_side=5),
        elements=st.floats(-50, 50),
    )
)
def test_log_softmax_normalizes(x):
    """exp(log_softmax) sums to one along dim, and equals softmax."""
    logp = F.log_softmax(x, dim=-1)
    assert_close(np.exp(logp).sum(axis=-1), np.ones(x.shape[:-1]), rtol=1e-12, atol=1e-12)
    assert_close(np.exp(logp), F.softmax(x, dim=-1), rtol=1e-12, atol=1e-300)
