"""Time one training step of the end-to-end model (tests/test_training_e2e.py's
bidirectional 2-layer LSTM classifier on packed variable-length batches) in rnnkit
and torch, interleaved in one process; prints medians and the ratio.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/train_step.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import rnnkit
import rnnkit.numpy as rnp
from rnnkit import nn, optim
from rnnkit.nn.utils.rnn import pack_padded_sequence


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30, help="padded length T")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    dtype = np.dtype(args.dtype)
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    I, H, C, N, T = 12, args.hidden, 9, args.batch, args.steps

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(I, H, 2, batch_first=True, bidirectional=True, dtype=dtype)
            self.fc = nn.Linear(2 * H, C, dtype=dtype)

    class TorchModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(I, H, 2, batch_first=True, bidirectional=True, dtype=tdtype)
            self.fc = torch.nn.Linear(2 * H, C, dtype=tdtype)

    theirs, ours = TorchModel(), Model()
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    opt, opt_t = optim.Adam(ours.parameters(), 1e-3), torch.optim.Adam(theirs.parameters(), 1e-3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, T, I)).astype(dtype)
    lengths = rng.integers(T // 2, T + 1, size=N)
    y = rng.integers(0, C, size=N)
    xt, lt, yt = torch.tensor(x), torch.tensor(lengths), torch.tensor(y)

    def loss_fn(model, x, lengths, y):
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, (h_n, _) = model.lstm(packed)
        return nn.functional.cross_entropy(model.fc(rnp.concatenate([h_n[-2], h_n[-1]], 1)), y)

    def step_ours():
        opt.zero_grad()
        _, grads = rnnkit.value_and_grad(loss_fn)(ours, x, lengths, y)
        opt.step(grads)

    def step_torch():
        opt_t.zero_grad()
        packed = torch.nn.utils.rnn.pack_padded_sequence(xt, lt, batch_first=True,
                                                         enforce_sorted=False)
        _, (h_n, _) = theirs.lstm(packed)
        loss = torch.nn.functional.cross_entropy(theirs.fc(torch.cat([h_n[-2], h_n[-1]], 1)), yt)
        loss.backward()
        opt_t.step()

    for f in (step_ours, step_torch):  # warm up (compilation, allocator)
        f()
    times = {"rnnkit": [], "torch": []}
    for _ in range(args.repeats):  # interleaved, so drift hits both alike
        for name, f in (("rnnkit", step_ours), ("torch", step_torch)):
            start = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"training step, bi-LSTM 2 layers, N={N} T={T} I={I} H={H} {args.dtype}, "
          f"{args.repeats} repeats")
    print(f"  rnnkit {med['rnnkit']:8.2f} ms   torch {med['torch']:8.2f} ms   "
          f"torch/rnnkit = {med['torch'] / med['rnnkit']:.2f}x")


if __name__ == "__main__":
    main()
