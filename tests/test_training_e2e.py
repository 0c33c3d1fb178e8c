"""End to end: a bidirectional 2-layer LSTM classifier on variable-length sequences,
trained for 30 steps from the same weights on the same batches in rnnkit and torch,
follows the same loss trajectory (float64, rtol 1e-8)."""

import numpy as np
import pytest

import rnnkit
import rnnkit.numpy as rnp
from rnnkit import nn
from rnnkit.nn.utils.rnn import pack_padded_sequence

from helpers import assert_close, to_numpy

INPUT, HIDDEN, CLASSES, STEPS = 4, 8, 3, 30


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True, batch_first=True,
                            dtype=np.float64)
        self.fc = nn.Linear(2 * HIDDEN, CLASSES, dtype=np.float64)


def torch_classifier(torch):
    """The same classifier in torch (a torch.nn.Module, so built once torch is imported)."""
    model = torch.nn.Module()
    model.lstm = torch.nn.LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True,
                               batch_first=True, dtype=torch.float64)
    model.fc = torch.nn.Linear(2 * HIDDEN, CLASSES, dtype=torch.float64)
    return model


def loss_fn(model, x, lengths, y):
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    _, (h_n, _) = model.lstm(packed)
    features = rnp.concatenate([h_n[-2], h_n[-1]], axis=1)  # both directions, last layer
    return nn.functional.cross_entropy(model.fc(features), y)


def torch_loss_fn(torch, model, x, lengths, y):
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True,
                                                     enforce_sorted=False)
    _, (h_n, _) = model.lstm(packed)
    features = torch.cat([h_n[-2], h_n[-1]], dim=1)
    return torch.nn.functional.cross_entropy(model.fc(features), y)


def batches(seed):
    rng = np.random.default_rng(seed)
    for _ in range(STEPS):
        N = 6
        lengths = rng.integers(2, 9, size=N)
        x = rng.standard_normal((N, 8, INPUT))
        y = rng.integers(0, CLASSES, size=N)
        x[:, :, 0] += y[:, None] * 0.5  # something to learn
        yield x, lengths, y


@pytest.mark.parametrize("make_opt", [
    lambda params, lib: lib.optim.Adam(params, lr=1e-2),
    lambda params, lib: lib.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True),
], ids=["adam", "sgd-nesterov"])
def test_loss_trajectory_matches_torch(make_opt, torch):
    torch.manual_seed(0)
    theirs = torch_classifier(torch)
    ours = Classifier()
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    opt_t = make_opt(theirs.parameters(), torch)
    opt = make_opt(ours.parameters(), rnnkit)
    losses, losses_t = [], []
    for x, lengths, y in batches(0):
        opt_t.zero_grad()
        loss_t = torch_loss_fn(torch, theirs, torch.tensor(x), torch.tensor(lengths),
                               torch.tensor(y))
        loss_t.backward()
        torch.nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
        opt_t.step()
        losses_t.append(loss_t.item())

        opt.zero_grad()
        loss, grads = rnnkit.value_and_grad(loss_fn)(ours, x, lengths, y)
        nn.utils.clip_grad_norm_(grads, 1.0)
        opt.step(grads)
        losses.append(float(loss))
    assert_close(losses, losses_t, 1e-8, 1e-12, "loss trajectory")
    assert np.mean(losses[-5:]) < np.mean(losses[:5])  # it learns
    for name, p in theirs.named_parameters():
        assert_close(getattr_path(ours, name), to_numpy(p), 1e-7, 1e-10, name)


def getattr_path(module, dotted):
    for part in dotted.split("."):
        module = getattr(module, part)
    return np.asarray(module)
