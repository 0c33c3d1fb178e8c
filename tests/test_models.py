"""rnnkit.models' reading options: patches of steps, mean pooling, the regressor."""

from __future__ import annotations

import numpy as np
import pytest

import rnnkit
from rnnkit.data import pad_batch
from rnnkit.models import SequenceClassifier, SequenceRegressor


def series(rng, lengths, C=2):
    return [rng.standard_normal((L, C)) for L in lengths]


@pytest.mark.parametrize("pool", ["last", "mean", "both"])
@pytest.mark.parametrize("patch", [1, 3])
def test_padding_never_changes_a_series_result(rng, pool, patch):
    """A series gives the same logits alone as beside longer ones (padding is ignored),
    whatever the patch and pooling."""
    model = SequenceClassifier(2, 3, hidden_size=5, num_layers=2, patch=patch, pool=pool,
                               dtype="float64", mean=[0.5, -1.0], std=[2.0, 0.5])
    batch = series(rng, [10, 4, 7])
    together = model._logits(batch)
    for k, s in enumerate(batch):
        np.testing.assert_allclose(model._logits([s])[0], together[k], rtol=1e-12)


def test_patch_reads_p_steps_as_one(rng):
    """patch=p equals the plain model on the series reshaped to (L/p, p C) by hand."""
    p = 3
    model = SequenceClassifier(2, 3, hidden_size=4, patch=p, dtype="float64")
    plain = SequenceClassifier(2 * p, 3, hidden_size=4, dtype="float64")
    plain.load_state_dict(model.state_dict())
    s = rng.standard_normal((8, 2))  # 8 steps: the last patch completed with one zero step
    by_hand = np.concatenate([s, np.zeros((1, 2))]).reshape(3, 2 * p)
    np.testing.assert_allclose(model._logits([s]), plain._logits([by_hand]), rtol=1e-12)


def test_mean_pool_averages_the_outputs_of_every_step(rng):
    model = SequenceClassifier(2, 3, hidden_size=4, pool="mean", dtype="float64")
    s = rng.standard_normal((6, 2))
    output, _ = model.rnn(s[None])
    expected = model.fc(output[0].mean(axis=0)[None])
    np.testing.assert_allclose(model._logits([s]), expected, rtol=1e-12)


def test_options_train_and_survive_save_and_load(rng, tmp_path):
    model = SequenceRegressor(2, hidden_size=4, patch=2, pool="mean", target_mean=3.0,
                              target_std=2.0)
    x, lengths = pad_batch(series(rng, [5, 3]), model.dtype)
    grads = rnnkit.grad(lambda m, x: (m(x, lengths) ** 2).sum())(model, x)
    assert all(np.abs(g).sum() > 0 for g in grads.values())
    rnnkit.save(model, tmp_path / "m.safetensors")
    back = rnnkit.load_module(tmp_path / "m.safetensors")
    assert (back.patch, back.pool, back.target_mean) == (2, "mean", 3.0)
    s = series(rng, [5, 3])
    np.testing.assert_array_equal(back.predict(s), model.predict(s))


def test_bad_options():
    with pytest.raises(ValueError, match="patch must be a positive int"):
        SequenceClassifier(2, 3, patch=0)
    with pytest.raises(ValueError, match="pool must be"):
        SequenceClassifier(2, 3, pool="max")
