"""The "seed" training step, one process, interleaved: nn.LSTM(10, 20, num_layers=2) (and
the same GRU) on x (T=5, N=3, I=10) float32, the loss ``m(x)[0].sum()``.

- rnnkit fused: ``rnnkit.value_and_grad(loss)(model)``, the whole stack's training
  forward and backward one compiled call each (``src/rnnkit/_kernels/stack_train.py``);
- rnnkit layers: the same with the fused path switched off (``_autodiff._FUSED_TRAIN``):
  the layer-by-layer wrappers of ``_ops``;
- torch: ``m.zero_grad(); m(x)[0].sum().backward()``, torch.set_num_threads(2).

Rounds cycle through the contenders (each a block of calls per round, every call timed),
so machine noise lands on all of them alike; the table gives each one's median per-call
time over all rounds and the ratios to torch (``--torch-threads 0``: to the layers).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/seed_train_step.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import rnnkit
from rnnkit import _autodiff


def _rnnkit_step(model, x, fused):
    loss = rnnkit.value_and_grad(lambda m: m(x)[0].sum())

    def step():
        _autodiff._FUSED_TRAIN = fused
        for p in model.parameters():
            p.grad = None
        loss(model)

    return step


def _torch_step(model, x):
    def step():
        model.zero_grad()
        model(x)[0].sum().backward()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=50, help="calls per block")
    parser.add_argument("--torch-threads", type=int, default=2,
                        help="torch.set_num_threads; 0: leave torch out")
    args = parser.parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3, 10)).astype(np.float32)
    xt = torch.from_numpy(x)
    contenders = {}
    for name in ("LSTM", "GRU"):
        ours = getattr(rnnkit.nn, name)(10, 20, num_layers=2)
        theirs = getattr(torch.nn, name)(10, 20, num_layers=2)
        contenders[f"{name} rnnkit fused"] = _rnnkit_step(ours, x, True)
        contenders[f"{name} rnnkit layers"] = _rnnkit_step(ours, x, False)
        if args.torch_threads:
            contenders[f"{name} torch"] = _torch_step(theirs, xt)
    for step in contenders.values():  # compile, warm caches
        for _ in range(20):
            step()
    times = {name: [] for name in contenders}
    clock = time.perf_counter
    for _ in range(args.rounds):
        for name, step in contenders.items():
            step()  # the first call of a block pays for the last contender's threads
            for _ in range(args.calls):
                t0 = clock()
                step()
                times[name].append(clock() - t0)
    _autodiff._FUSED_TRAIN = True
    med = {name: statistics.median(t) * 1e6 for name, t in times.items()}
    low = {name: min(t) * 1e6 for name, t in times.items()}
    print(f"seed training step, T5 N3 I10 H20 2 layers float32; median of {args.rounds} "
          f"rounds x {args.calls} calls (µs per step); torch threads: {args.torch_threads}")
    for name in ("LSTM", "GRU"):
        base = f"{name} torch" if args.torch_threads else f"{name} rnnkit layers"
        for kind in ("rnnkit fused", "rnnkit layers", "torch"):
            if f"{name} {kind}" in med:
                us = med[f"{name} {kind}"]
                print(f"  {name:4s} {kind:14s} median {us:8.1f} µs  "
                      f"{base.split(' ', 1)[1]} / this = {med[base] / us:5.2f}x   "
                      f"(min {low[f'{name} {kind}']:7.1f} µs)")


if __name__ == "__main__":
    main()
