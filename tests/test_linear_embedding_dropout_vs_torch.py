"""Linear, Embedding, Dropout, Sequential, Identity against torch 2.13.0: forward values and
gradients through rnnkit.value_and_grad, in float64 (rtol 1e-9) and float32 (rtol 1e-4)."""

import numpy as np
import pytest

import rnnkit
from rnnkit import nn

from helpers import assert_close, to_numpy, torch_dtype

DTYPES = [np.float64, np.float32]
TOL = {np.float64: {"rtol": 1e-9, "atol": 1e-12}, np.float32: {"rtol": 1e-4, "atol": 1e-5}}


def copy_weights(theirs, ours):
    ours.load_state_dict({k: to_numpy(v) for k, v in theirs.state_dict().items()})


def check_grads(theirs, grads, dtype):
    assert list(grads) == [name for name, _ in theirs.named_parameters()]
    for name, p in theirs.named_parameters():
        assert_close(grads[name], to_numpy(p.grad), **TOL[dtype], err_msg=name)


# ---------------------------------------------------------------- Linear


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(6, 4), (4,), (2, 3, 4)])
def test_linear_matches_torch(dtype, bias, shape, rng, torch):
    theirs = torch.nn.Linear(4, 3, bias=bias, dtype=torch_dtype(torch, dtype))
    ours = nn.Linear(4, 3, bias=bias, dtype=dtype)
    copy_weights(theirs, ours)
    x = rng.standard_normal(shape).astype(dtype)
    x_t = torch.tensor(x, requires_grad=True)
    y_t = theirs(x_t)
    (y_t.sin().sum()).backward()

    y = ours(x)
    assert y.dtype == dtype
    assert_close(y, to_numpy(y_t), **TOL[dtype])
    loss, (grads, dx) = rnnkit.value_and_grad(lambda m, x: np.sin(m(x)).sum(), argnums=(0, 1))(
        ours, x
    )
    assert_close(loss, (y_t.sin().sum()).item(), **TOL[dtype])
    check_grads(theirs, grads, dtype)
    assert_close(dx, to_numpy(x_t.grad), **TOL[dtype])
    for name, p in ours.named_parameters():  # .grad is left like torch's backward
        assert_close(p.grad, grads[name], rtol=0, atol=0)


def test_linear_init_is_torchs_distribution():
    rnnkit.manual_seed(0)
    lin = nn.Linear(400, 300)
    bound = 1 / np.sqrt(400)
    for p in (lin.weight, lin.bias):
        assert p.dtype == np.float32
        assert np.abs(p).max() <= bound
        assert np.abs(p).max() > 0.99 * bound
        assert abs(float(np.mean(p))) < 5 * bound / np.sqrt(3 * p.size)  # 5 sigma
    # uniform: variance bound^2 / 3
    np.testing.assert_allclose(np.var(np.asarray(lin.weight)), bound**2 / 3, rtol=0.02)
    assert lin.weight.shape == (300, 400) and lin.bias.shape == (300,)
    rnnkit.manual_seed(0)
    again = nn.Linear(400, 300)
    assert_close(again.weight, lin.weight, rtol=0, atol=0)
    assert [n for n, _ in nn.Linear(2, 3, bias=False).named_parameters()] == ["weight"]


def test_linear_config_and_repr():
    lin = nn.Linear(5, 2, bias=False, dtype=np.float64)
    cfg = lin.config()
    assert cfg == {"in_features": 5, "out_features": 2, "bias": False, "dtype": "float64"}
    rebuilt = nn.Linear(**cfg)
    assert rebuilt.weight.dtype == np.float64 and rebuilt.bias is None
    assert repr(nn.Linear(5, 2)) == "Linear(in_features=5, out_features=2, bias=True)"


def test_linear_rejects_bad_input():
    lin = nn.Linear(4, 3)
    with pytest.raises(TypeError, match="float64.*float32"):
        lin(np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"\(\*, in_features\) = \(\*, 4\), got \(2, 5\)"):
        lin(np.zeros((2, 5), np.float32))


# ---------------------------------------------------------------- Embedding


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding_idx", [None, 0, 3, -2])
def test_embedding_matches_torch(dtype, padding_idx, rng, torch):
    theirs = torch.nn.Embedding(7, 5, padding_idx=padding_idx, dtype=torch_dtype(torch, dtype))
    ours = nn.Embedding(7, 5, padding_idx=padding_idx, dtype=dtype)
    assert ours.padding_idx == theirs.padding_idx
    copy_weights(theirs, ours)
    idx = np.array([[0, 3, 5, 5], [6, 1, 3, 0], [2, 2, 4, 5]])  # every padding row appears
    target = rng.standard_normal((3, 4, 5)).astype(dtype)
    out_t = theirs(torch.tensor(idx))
    ((out_t - torch.tensor(target)) ** 2).sum().backward()

    assert_close(ours(idx), to_numpy(out_t), **TOL[dtype])
    loss, grads = rnnkit.value_and_grad(lambda m, i: ((m(i) - target) ** 2).sum())(ours, idx)
    assert_close(loss, ((out_t - torch.tensor(target)) ** 2).sum().item(), **TOL[dtype])
    check_grads(theirs, grads, dtype)
    if padding_idx is not None:
        assert not grads["weight"][padding_idx].any()
        assert grads["weight"].any()


def test_embedding_padding_row_starts_at_zero_and_keeps_its_value():
    emb = nn.Embedding(6, 4, padding_idx=-1, dtype=np.float64)
    assert emb.padding_idx == 5
    assert not np.asarray(emb.weight)[5].any()
    emb.weight[5] = 2.0  # a user-set padding vector is still what the lookup returns
    idx = np.array([5, 1])
    out = emb(idx)
    assert_close(out[0], np.full(4, 2.0))
    g = rnnkit.grad(lambda m: (m(idx) ** 2).sum())(emb)
    assert not g["weight"][5].any()
    assert_close(g["weight"][1], 2 * np.asarray(emb.weight)[1])


def test_embedding_init_and_errors():
    rnnkit.manual_seed(1)
    w = np.asarray(nn.Embedding(1000, 50).weight)
    assert w.dtype == np.float32
    assert abs(w.mean()) < 0.02 and abs(w.std() - 1) < 0.02  # N(0, 1)
    assert nn.Embedding(3, 2, padding_idx=-3).config() == {
        "num_embeddings": 3,
        "embedding_dim": 2,
        "padding_idx": 0,
        "dtype": "float32",
    }
    with pytest.raises(ValueError, match="padding_idx"):
        nn.Embedding(3, 2, padding_idx=3)
    with pytest.raises(ValueError, match="padding_idx"):
        nn.Embedding(3, 2, padding_idx=-4)
    emb = nn.Embedding(3, 2)
    with pytest.raises(ValueError, match=r"input must hold indices in \[0, 3\), got 3"):
        emb(np.array([0, 3]))
    with pytest.raises(TypeError, match="integer"):
        emb(np.array([0.0, 1.0]))


# ---------------------------------------------------------------- Dropout


def test_dropout_eval_is_identity_and_p0_identity(rng):
    x = rng.standard_normal((5, 6))
    drop = nn.Dropout(0.7).eval()
    assert drop(x) is x
    assert nn.Dropout(0.0)(x) is x
    assert not nn.Dropout(1.0)(x).any()
    assert repr(nn.Dropout(0.2)) == "Dropout(p=0.2, inplace=False)"
    assert nn.Dropout(0.2).config() == {"p": 0.2}
    with pytest.raises(ValueError, match="between 0 and 1, but got 1.5"):
        nn.Dropout(1.5)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_train_scaling_and_mask_statistics(p):
    x = np.ones((200, 500))
    rnnkit.manual_seed(3)
    y = nn.Dropout(p)(x)
    kept = y != 0
    assert_close(y[kept], np.full(kept.sum(), 1 / (1 - p)), rtol=1e-15, atol=0)
    n = x.size
    # the fraction dropped is p, within 5 standard deviations of a binomial
    assert abs((~kept).mean() - p) < 5 * np.sqrt(p * (1 - p) / n)
    assert abs(y.mean() - 1.0) < 5 * np.sqrt(p / (1 - p) / n)  # unbiased
    rnnkit.manual_seed(3)
    assert_close(nn.Dropout(p)(x), y, rtol=0, atol=0)  # same seed, same mask
    assert not np.array_equal(nn.Dropout(p)(x), y)  # the generator moved on


def test_dropout_gradient_uses_the_same_mask(rng):
    lin = nn.Linear(6, 40, dtype=np.float64)
    x = rng.standard_normal((3, 6))
    model = nn.Sequential(lin, nn.Dropout(0.5))
    rnnkit.manual_seed(5)
    out = model(x)
    rnnkit.manual_seed(5)
    g = rnnkit.grad(lambda m, x: m(x).sum())(model, x)
    # d/db of sum(mask * (x W^T + b) / (1 - p)) = per-column count of kept rows * 2
    kept = (out != 0).astype(float)
    assert_close(g["0.bias"], 2 * kept.sum(axis=0))
    assert_close(g["0.weight"], 2 * kept.T @ x)


# ---------------------------------------------------------------- Sequential, Identity


def build_mlp(ns, dtype):
    return ns.Sequential(
        ns.Linear(5, 8, dtype=dtype),
        ns.Identity(),
        ns.Dropout(0.3),
        ns.Linear(8, 8, bias=False, dtype=dtype),
        ns.Linear(8, 3, dtype=dtype),
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_sequential_matches_torch(dtype, rng, torch):
    theirs = build_mlp(torch.nn, torch_dtype(torch, dtype)).eval()
    ours = build_mlp(nn, dtype).eval()
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    copy_weights(theirs, ours)
    x = rng.standard_normal((4, 5)).astype(dtype)
    y = rng.integers(0, 3, size=4)
    out_t = theirs(torch.tensor(x))
    loss_t = torch.nn.functional.cross_entropy(torch.tanh(out_t), torch.tensor(y))
    loss_t.backward()
    assert_close(ours(x), to_numpy(out_t), **TOL[dtype])
    loss, grads = rnnkit.value_and_grad(
        lambda m, x, y: nn.functional.cross_entropy(np.tanh(m(x)), y)
    )(ours, x, y)
    assert_close(loss, loss_t.item(), **TOL[dtype])
    check_grads(theirs, grads, dtype)


def test_sequential_container_protocol():
    a, b, c = nn.Linear(2, 3), nn.Identity(), nn.Linear(3, 1)
    seq = nn.Sequential(a, b, c)
    assert len(seq) == 3 and list(seq) == [a, b, c]
    assert seq[0] is a and seq[-1] is c and seq[1] is b
    sub = seq[1:]
    assert isinstance(sub, nn.Sequential) and list(sub) == [b, c]
    assert [n for n, _ in sub.named_parameters()] == ["2.weight", "2.bias"]  # torch keeps names
    with pytest.raises(IndexError):
        seq[3]
    seq.append(nn.Dropout(0.1))
    assert len(seq) == 4 and [n for n, _ in seq.named_modules()][1:] == ["0", "1", "2", "3"]
    seq[1] = nn.Dropout(0.2)
    assert seq[1].p == 0.2
    assert seq.config() == {
        "modules": [
            {"class": "Linear", "config": a.config()},
            {"class": "Dropout", "config": {"p": 0.2}},
            {"class": "Linear", "config": c.config()},
            {"class": "Dropout", "config": {"p": 0.1}},
        ]
    }
    seq.eval()
    assert not any(m.training for m in seq.modules())
    with pytest.raises(TypeError, match="Module"):
        nn.Sequential(a, lambda x: x)
    x = np.ones((1, 2), np.float32)
    assert_close(nn.Sequential()(x), x, rtol=0, atol=0)  # empty: identity, like torch


def test_sequential_of_lstm_and_linear_trains_through_value_and_grad(rng, torch):
    class Last(nn.Module):
        def forward(self, out):
            return out[0][-1]

    theirs_lstm = torch.nn.LSTM(3, 4, dtype=torch.float64)
    theirs_fc = torch.nn.Linear(4, 2, dtype=torch.float64)
    ours = nn.Sequential(nn.LSTM(3, 4, dtype=np.float64), Last(), nn.Linear(4, 2, dtype=np.float64))
    ours[0].load_state_dict({k: to_numpy(v) for k, v in theirs_lstm.state_dict().items()})
    ours[2].load_state_dict({k: to_numpy(v) for k, v in theirs_fc.state_dict().items()})
    x = rng.standard_normal((5, 2, 3))
    y = np.array([1, 0])
    loss_t = torch.nn.functional.cross_entropy(
        theirs_fc(theirs_lstm(torch.tensor(x))[0][-1]), torch.tensor(y)
    )
    loss_t.backward()
    loss, grads = rnnkit.value_and_grad(lambda m: nn.functional.cross_entropy(m(x), y))(ours)
    assert_close(loss, loss_t.item())
    for prefix, module in (("0.", theirs_lstm), ("2.", theirs_fc)):
        for name, p in module.named_parameters():
            assert_close(grads[prefix + name], to_numpy(p.grad), err_msg=name)
