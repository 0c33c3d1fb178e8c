"""SGD, Adam, AdamW against torch 2.13.0: 20 steps from the same weights, fed the same
gradients, every option combination, parameters equal to 1e-12 in float64."""

import copy
import itertools

import numpy as np
import pytest

import rnnkit
from rnnkit import nn, optim

from helpers import assert_close, to_numpy

STEPS = 20
SHAPES = [(3, 4), (4,), (2, 1, 3)]


def run_both(torch, make, rng, steps=STEPS, skip=None):
    """Run ``make(torch.optim)`` and ``make(rnnkit.optim)`` side by side. Step t's gradient
    is ``noise_t + 0.5 * sin(p)`` (so parity is checked through feedback too); the
    parameter ``skip`` has no gradient on even steps (both frameworks skip it)."""
    start = [rng.standard_normal(s) for s in SHAPES]
    noise = [[rng.standard_normal(s) for s in SHAPES] for _ in range(steps)]
    theirs = [torch.tensor(w, requires_grad=True) for w in start]
    ours = [nn.Parameter(w) for w in start]
    opt_t, opt = make(torch.optim, theirs), make(optim, ours)
    for t in range(steps):
        for i, (p_t, p) in enumerate(zip(theirs, ours, strict=True)):
            if skip == i and t % 2 == 0:
                p_t.grad, p.grad = None, None
                continue
            g = noise[t][i] + 0.5 * np.sin(np.asarray(p))
            p_t.grad = torch.tensor(noise[t][i]) + 0.5 * torch.sin(p_t.detach())
            p.grad = g
        opt_t.step()
        opt.step()
        for i, (p_t, p) in enumerate(zip(theirs, ours, strict=True)):
            assert_close(
                p,
                to_numpy(p_t.detach()),
                rtol=1e-12,
                atol=1e-14,
                err_msg=f"step {t}, parameter {i}",
            )
    return opt_t, opt, theirs, ours


SGD_GRID = [
    dict(momentum=m, dampening=d, weight_decay=wd, nesterov=n, maximize=mx)
    for m, d, wd, n, mx in itertools.product(
        [0.0, 0.9], [0.0, 0.3], [0.0, 0.05], [False, True], [False, True]
    )
    if not (n and (m == 0 or d != 0))
]


@pytest.mark.parametrize("kw", SGD_GRID, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_sgd_matches_torch(kw, rng, torch):
    run_both(torch, lambda o, ps: o.SGD(ps, lr=0.05, **kw), rng, skip=1)


ADAM_GRID = list(itertools.product(["Adam", "AdamW"], [False, True], [0.0, 0.1], [False, True]))


@pytest.mark.parametrize("name,amsgrad,weight_decay,maximize", ADAM_GRID)
def test_adam_matches_torch(name, amsgrad, weight_decay, maximize, rng, torch):
    def make(o, ps):
        return getattr(o, name)(
            ps,
            lr=0.03,
            betas=(0.8, 0.99),
            eps=1e-6,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
        )

    opt_t, opt, _, ours = run_both(torch, make, rng, skip=2)
    # the state matches torch's too
    for i, p in enumerate(ours):
        for key, value in opt_t.state_dict()["state"][i].items():
            assert_close(opt.state[p][key], to_numpy(value), rtol=1e-12, atol=1e-14, err_msg=key)


def test_defaults_match_torch(rng, torch):
    for name in ["SGD", "Adam", "AdamW"]:
        theirs = getattr(torch.optim, name)([torch.zeros(1, requires_grad=True)]).defaults
        ours = getattr(optim, name)([nn.Parameter(np.zeros(1))]).defaults
        for key, value in ours.items():
            assert theirs[key] == value, (name, key)
    run_both(torch, lambda o, ps: o.Adam(ps), rng, steps=5)
    run_both(torch, lambda o, ps: o.AdamW(ps), rng, steps=5)


def test_param_groups_match_torch(rng, torch):
    def make(o, ps):
        return o.SGD([{"params": ps[:1], "lr": 0.2}, {"params": ps[1:]}], lr=0.01, momentum=0.5)

    opt_t, opt, _, _ = run_both(torch, make, rng, steps=5)
    assert [g["lr"] for g in opt.param_groups] == [0.2, 0.01]
    assert [g["momentum"] for g in opt.param_groups] == [0.5, 0.5]


def test_state_dict_round_trip_continues_identically(rng):
    def fresh():
        return [nn.Parameter(np.linspace(-1, 1, 6).reshape(2, 3)), nn.Parameter(np.ones(3))]

    grads = [[rng.standard_normal(p.shape) for p in fresh()] for _ in range(10)]
    straight = fresh()
    opt = optim.Adam(straight, lr=0.1, amsgrad=True)
    for g in grads:
        opt.step(g)

    resumed = fresh()
    first = optim.Adam(resumed, lr=0.1, amsgrad=True)
    for g in grads[:4]:
        first.step(g)
    saved = copy.deepcopy(first.state_dict())
    assert set(saved) == {"state", "param_groups"}
    assert saved["param_groups"][0]["params"] == [0, 1]
    assert set(saved["state"][0]) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    assert float(saved["state"][0]["step"]) == 4.0
    second = optim.Adam(resumed, lr=0.5, amsgrad=True)  # hyperparameters come from the dict
    second.load_state_dict(saved)
    assert second.param_groups[0]["lr"] == 0.1
    for g in grads[4:]:
        second.step(g)
    for a, b in zip(straight, resumed, strict=True):
        assert_close(a, b, rtol=0, atol=0)


def test_load_state_dict_from_torch(rng, torch):
    start = [rng.standard_normal(s) for s in SHAPES]
    theirs = [torch.tensor(w, requires_grad=True) for w in start]
    opt_t = torch.optim.SGD(theirs, lr=0.1, momentum=0.9)
    for p in theirs:
        p.grad = torch.ones_like(p)
    opt_t.step()
    sd = opt_t.state_dict()
    ours = [nn.Parameter(p.detach().numpy()) for p in theirs]
    opt = optim.SGD(ours, lr=0.1, momentum=0.9)
    opt.load_state_dict(
        {
            "state": {
                k: {n: (None if v is None else v.numpy()) for n, v in s.items()}
                for k, s in sd["state"].items()
            },
            "param_groups": sd["param_groups"],
        }
    )
    for p_t, p in zip(theirs, ours, strict=True):
        p_t.grad = torch.full_like(p_t, 0.5)
        p.grad = np.full(p.shape, 0.5)
    opt_t.step()
    opt.step()
    for p_t, p in zip(theirs, ours, strict=True):
        assert_close(p, to_numpy(p_t.detach()), rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------- step(grads)


def build_model():
    rnnkit.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5, dtype=np.float64), nn.Linear(5, 2, dtype=np.float64))


def loss_fn(model, x, y):
    return nn.functional.cross_entropy(model(x), y)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_step_with_grads_dict_equals_step_with_dot_grad(name, rng):
    x, y = rng.standard_normal((8, 3)), rng.integers(0, 2, 8)
    a, b = build_model(), build_model()
    opt_a = getattr(optim, name)(a.parameters(), lr=0.1)
    opt_b = getattr(optim, name)(b.parameters(), lr=0.1)
    for _ in range(5):
        _, grads = rnnkit.value_and_grad(loss_fn)(a, x, y)
        opt_a.step(grads)
        opt_a.zero_grad()
        opt_b.zero_grad()
        rnnkit.value_and_grad(loss_fn)(b, x, y)
        opt_b.step()
    for (name_a, p_a), (_, p_b) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert_close(p_a, p_b, rtol=0, atol=0, err_msg=name_a)
    assert all(p.grad is None for p in a.parameters())  # zero_grad sets None, as torch


def test_step_with_list_of_grads_and_updates_in_place(rng):
    model = build_model()
    before = [np.array(p) for p in model.parameters()]
    ids = [id(p) for p in model.parameters()]
    grads = [np.ones(p.shape) for p in model.parameters()]
    optim.SGD(model.parameters(), lr=0.5).step(grads)
    assert [id(p) for p in model.parameters()] == ids
    for p, w in zip(model.parameters(), before, strict=True):
        assert isinstance(p, nn.Parameter)
        assert_close(p, w - 0.5)


def test_step_mismatch_errors():
    model = build_model()
    opt = optim.Adam(model.parameters())
    grads = {name: np.zeros(p.shape) for name, p in model.named_parameters()}
    with pytest.raises(ValueError, match="got 3 gradients for the optimizer's 4 parameters"):
        opt.step(dict(list(grads.items())[:3]))
    grads["1.weight"] = np.zeros((5, 2))
    with pytest.raises(
        ValueError, match=r"grads\['1.weight'\] has shape \(5, 2\).*parameter 2 .*\(2, 5\)"
    ):
        opt.step(grads)
    with pytest.raises(ValueError, match=r"grads\[0\] has shape \(1,\)"):
        opt.step([np.zeros(1)] * 4)
    with pytest.raises(TypeError, match="dict of gradients"):
        opt.step(np.zeros(3))
    assert all(not opt.state.get(p) for p in model.parameters())  # nothing moved
    with pytest.raises(ValueError, match="Invalid learning rate"):
        optim.SGD(model.parameters(), lr=-1)
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD(model.parameters(), lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="beta parameter at index 1"):
        optim.Adam(model.parameters(), betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="empty"):
        optim.SGD([], lr=0.1)


def test_zero_grad_and_closure():
    p = nn.Parameter(np.array([1.0, 2.0]))
    opt = optim.SGD([p], lr=0.5)
    p.grad = np.ones(2)
    opt.zero_grad(set_to_none=False)
    assert_close(p.grad, np.zeros(2), rtol=0, atol=0)
    opt.zero_grad()
    assert p.grad is None
    opt.step()  # no gradient: skipped, as torch

    def closure():
        p.grad = np.asarray(p) * 2
        return float((np.asarray(p) ** 2).sum())

    assert opt.step(closure) == 5.0
    assert_close(p, np.array([0.0, 0.0]))
