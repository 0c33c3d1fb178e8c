"""Time the cell options' compiled kernels (``rnnkit._ops_options``) against the plain ones
(``rnnkit._ops``): one layer-direction of each mode, inference (``keep=False``) and a
training step (forward with ``keep=True``, then backward), each option alone and all
together; interleaved repeats in one process, printed as ratios option/plain of the
medians and of the fastest runs ("(min)": on a shared machine the less disturbed figure).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/cell_options.py

Inference runs eval-mode zoneout (``zoneout_eval``) and the recurrent-dropout mask (as
Monte-Carlo dropout would); training the drawn zoneout mask.

Layer norm's training step keeps three more ``(T, N, G)`` arrays than the plain one (LN(u),
LN(v), δv). On the 2-core VM this was written on, memory that glibc hands back to the
system and takes again is slow to touch the first time (26 MB: ~85 ms on a fresh mapping,
~2 ms once reused), so those ratios swing from run to run; with glibc told to keep its
memory (``MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=17179869184``) the
layer-norm and all-options training ratios were 1.02 and 1.06 where the default run gave
1.29 and 1.93 (medians, LSTM, loaded machine); on one core (``OPENBLAS_NUM_THREADS=1``,
no row split), CPU time, fastest of 7: 0.97 and 1.05 with glibc keeping its memory, 1.13
and 1.47 without.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from rnnkit import _ops, _ops_options

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
P_DROP, P_ZONE = 0.3, 0.1


def _setup(mode, T, N, I, H, dtype, seed=0):
    rng = np.random.default_rng(seed)

    def u(*shape, scale=1.0):
        return (rng.uniform(-1, 1, shape) * scale).astype(dtype)

    G, k = GATES[mode] * H, 1 / np.sqrt(H)
    arrays = dict(x=u(T, N, I), h_0=u(N, H), c_0=u(N, H), w_ih=u(G, I, scale=k),
                  w_hh=u(G, H, scale=k), b_ih=u(G, scale=k), b_hh=u(G, scale=k),
                  d_output=u(T, N, H), dh_n=u(N, H), dc_n=u(N, H))
    options = {
        "layer_norm": dict(w_ln_ih=1 + u(G, scale=0.1), w_ln_hh=1 + u(G, scale=0.1)),
        "recurrent_dropout": dict(
            recurrent_mask=((rng.random((N, H)) >= P_DROP) / (1 - P_DROP)).astype(dtype)),
        "zoneout": dict(zoneout_mask=(rng.random((T, N, H)) < P_ZONE).astype(dtype)),
    }
    if mode == "LSTM":
        options["layer_norm"].update(w_ln_c=1 + u(H, scale=0.1), b_ln_c=u(H, scale=0.1))
        options["peepholes"] = dict(w_ph=u(3 * H, scale=k))
    return arrays, options


def _forward(impl, mode, a, keep, opts):
    if mode == "LSTM":
        return impl.lstm_forward(a["x"], a["h_0"], a["c_0"], a["w_ih"], a["w_hh"],
                                 a["b_ih"] + a["b_hh"], None, None, False, keep, **opts)
    if mode == "GRU":
        return impl.gru_forward(a["x"], a["h_0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"],
                                None, False, keep, **opts)
    return impl.rnn_forward(a["x"], a["h_0"], a["w_ih"], a["w_hh"], a["b_ih"] + a["b_hh"],
                            "tanh", None, False, keep, **opts)


def _train(impl, mode, a, opts):
    saved = _forward(impl, mode, a, True, opts)[-1]
    if mode == "LSTM":
        return impl.lstm_backward(a["x"], a["w_ih"], a["w_hh"], None, saved, a["d_output"],
                                  a["dh_n"], a["dc_n"], None, False, **opts)
    if mode == "GRU":
        return impl.gru_backward(a["x"], a["w_ih"], a["w_hh"], saved, a["d_output"], a["dh_n"],
                                 None, False, **opts)
    return impl.rnn_backward(a["x"], a["w_ih"], a["w_hh"], saved, a["d_output"], a["dh_n"],
                             "tanh", None, False, **opts)


def _jobs(mode, arrays, options):
    """``{(variant, "inference" | "training"): callable}``, plain first."""
    inference_options = dict(options)
    inference_options["zoneout"] = dict(zoneout_eval=P_ZONE)  # eval mode
    every = {k: v for opts in options.values() for k, v in opts.items()}
    every_eval = {k: v for opts in inference_options.values() for k, v in opts.items()}
    jobs = {("plain", "inference"): lambda: _forward(_ops, mode, arrays, False, {}),
            ("plain", "training"): lambda: _train(_ops, mode, arrays, {})}
    for name in [*options, "all"]:
        train_opts = every if name == "all" else options[name]
        infer_opts = every_eval if name == "all" else inference_options[name]
        jobs[(name, "inference")] = (
            lambda o=infer_opts: _forward(_ops_options, mode, arrays, False, o))
        jobs[(name, "training")] = lambda o=train_opts: _train(_ops_options, mode, arrays, o)
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--input", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--modes", default="LSTM,GRU,RNN")
    args = parser.parse_args()
    dtype = np.dtype(args.dtype)
    print(f"T{args.steps} N{args.batch} I{args.input} H{args.hidden} {dtype.name}, "
          f"{args.repeats} interleaved repeats: median ms, its ratio to plain, and the ratio "
          f"of the fastest runs")
    for mode in args.modes.split(","):
        arrays, options = _setup(mode, args.steps, args.batch, args.input, args.hidden, dtype)
        jobs = _jobs(mode, arrays, options)
        for job in jobs.values():  # compile and warm
            job()
        times = {key: [] for key in jobs}
        for _ in range(args.repeats):
            for key, job in jobs.items():
                start = time.perf_counter()
                job()
                times[key].append(time.perf_counter() - start)
        median = {key: statistics.median(ts) * 1e3 for key, ts in times.items()}
        best = {key: min(ts) * 1e3 for key, ts in times.items()}
        print(f"\n{mode:<18}" + "".join(f"{kind + ' ms':>15}{'ratio':>7}{'(min)':>7}"
                                         for kind in ("inference", "training")))
        for name in dict.fromkeys(variant for variant, _ in jobs):
            row = f"{name:<18}"
            for kind in ("inference", "training"):
                row += (f"{median[(name, kind)]:>15.1f}"
                        f"{median[(name, kind)] / median[('plain', kind)]:>7.2f}"
                        f"{best[(name, kind)] / best[('plain', kind)]:>7.2f}")
            print(row)

if __name__ == "__main__":
    main()
