"""clip_grad_norm_ against torch.nn.utils.clip_grad_norm_ 2.13.0: total norm and clipped
gradients, on a grads dict and on parameters, for several norms including inf."""

import math

import numpy as np
import pytest

import rnnkit
from rnnkit import nn
from rnnkit.nn.utils import clip_grad_norm_

from helpers import assert_close, to_numpy

SHAPES = {"a.weight": (4, 3), "a.bias": (4,), "b.weight": (2, 2, 2)}
NORMS = [2.0, 1.0, 3.0, math.inf, "inf", 0.5]


def torch_clip(torch, grads, max_norm, norm_type, dtype="float64"):
    dtype = getattr(torch, dtype)
    ps = []
    for g in grads.values():
        p = torch.zeros(g.shape, dtype=dtype, requires_grad=True)
        p.grad = torch.tensor(g)
        ps.append(p)
    total = torch.nn.utils.clip_grad_norm_(ps, max_norm, norm_type=norm_type)
    return total.item(), [to_numpy(p.grad) for p in ps]


@pytest.mark.parametrize("norm_type", NORMS)
@pytest.mark.parametrize("max_norm", [0.5, 1e3])  # clipping, and not (coefficient 1)
def test_dict_matches_torch(norm_type, max_norm, rng, torch):
    grads = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    total_t, clipped_t = torch_clip(torch, grads, max_norm, norm_type)
    arrays = dict(grads)
    total = clip_grad_norm_(grads, max_norm, norm_type=norm_type)
    assert_close(total, total_t)
    for (k, g), g_t in zip(grads.items(), clipped_t, strict=True):
        assert g is arrays[k]  # scaled in place
        assert_close(g, g_t, err_msg=k)


@pytest.mark.parametrize("norm_type", [2.0, math.inf])
def test_parameters_match_torch_float32(norm_type, rng, torch):
    grads = {k: (10 * rng.standard_normal(s)).astype(np.float32) for k, s in SHAPES.items()}
    total_t, clipped_t = torch_clip(torch, grads, 1.0, norm_type, dtype="float32")
    params = [nn.Parameter(np.zeros(s, np.float32)) for s in SHAPES.values()]
    for p, g in zip(params, grads.values(), strict=True):
        p.grad = g.copy()
    params.append(nn.Parameter(np.zeros(3, np.float32)))  # no .grad: skipped, as torch
    total = clip_grad_norm_(iter(params), 1.0, norm_type)
    assert_close(total, total_t, rtol=1e-5, atol=0)
    assert np.asarray(total).dtype == np.float32
    for p, g_t in zip(params, clipped_t, strict=False):
        assert p.grad.dtype == np.float32
        assert_close(p.grad, g_t, rtol=1e-5, atol=1e-7)
    assert params[-1].grad is None


def test_after_value_and_grad_the_norm_is_max_norm(rng):
    model = nn.Sequential(nn.Linear(3, 4, dtype=np.float64), nn.Linear(4, 2, dtype=np.float64))
    x = 10 * rng.standard_normal((5, 3))
    _, grads = rnnkit.value_and_grad(lambda m, x: (m(x) ** 2).sum())(model, x)
    total = clip_grad_norm_(grads, 0.1)
    assert total > 0.1
    after = np.sqrt(sum((g**2).sum() for g in grads.values()))
    assert_close(after, 0.1 * total / (total + 1e-6))
    # the parameters' .grad (filled by value_and_grad) is clipped by passing the parameters
    clip_grad_norm_(model.parameters(), 0.1)
    for name, p in model.named_parameters():
        assert_close(p.grad, grads[name], err_msg=name)


def test_single_parameter_empty_and_nonfinite():
    p = nn.Parameter(np.zeros(2))
    p.grad = np.array([3.0, 4.0])
    assert clip_grad_norm_(p, 1.0) == 5.0
    assert_close(p.grad, np.array([3.0, 4.0]) / (5.0 + 1e-6))
    assert clip_grad_norm_([], 1.0) == 0.0
    assert clip_grad_norm_({"w": None}, 1.0) == 0.0
    bad = {"w": np.array([np.inf, 1.0])}
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm_(bad, 1.0, error_if_nonfinite=True)
    assert_close(bad["w"], np.array([np.inf, 1.0]))  # untouched when it raises


def test_read_only_dict_entry_is_replaced():
    g = np.array([6.0, 8.0])
    g.flags.writeable = False
    grads = {"w": g}
    clip_grad_norm_(grads, 5.0)
    assert_close(grads["w"], np.array([6.0, 8.0]) * 5.0 / (10.0 + 1e-6))
    assert_close(g, np.array([6.0, 8.0]))
