"""The figures of docs/distributed.md: `rnnkit train` on 1 process vs `mpirun -n 2`, the
all-reduce's share of a training step, and `predict --dask local` throughput.

    python benchmarks/mpi_dask.py data DIR [--series N --length T --channels C]
        write DIR/Synth_TRAIN.ts and DIR/Synth_TEST.ts: random series of one length,
        4 classes (a compute-bound training set for the medium LSTM)
    [mpirun -n 2] python benchmarks/mpi_dask.py train TRAIN-ARGS...
        `rnnkit train TRAIN-ARGS` with the all-reduce timed; rank 0 prints one JSON line:
        the wall time, the training passes' seconds, the steps, the seconds spent in
        MPI_Allreduce, and the seconds spent waiting for the slower rank before it
        (a barrier put in front of each all-reduce, to tell waiting from sending)
    mpirun -n 2 python benchmarks/mpi_dask.py allreduce --floats N
        rnnkit.distributed.all_reduce of a dict holding N float32 numbers (a gradient),
        repeated: the median time of one call, after a barrier (no waiting measured)
    python benchmarks/mpi_dask.py predict MODEL --copies K
        JapaneseVowels' test set K times (370 K series): model.predict_proba in this
        process against rnnkit.dask.predict_proba on a local cluster (started inside the
        timing, and already running), checking that the results are equal

Run with `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE` (they halve OpenBLAS's speed on
some machines); for MPI, one BLAS thread per rank: `-x OPENBLAS_NUM_THREADS=1
-x NUMBA_NUM_THREADS=1`. (Not named distributed.py: a script's own folder comes first
on sys.path, and would hide Dask's `distributed` package.)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def write_data(folder: Path, series: int, length: int, channels: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for part, n in (("TRAIN", series), ("TEST", max(series // 4, 1))):
        labels = rng.integers(0, 4, n)
        lines = ["@problemName Synth", "@timeStamps false", "@missing false",
                 f"@univariate {'true' if channels == 1 else 'false'}",
                 f"@dimensions {channels}", "@equalLength true", f"@seriesLength {length}",
                 "@classLabel true 0 1 2 3", "@data"]
        for label in labels:
            # a class-dependent mean: learnable, so the loss moves
            x = rng.standard_normal((channels, length)) + 0.3 * label
            lines.append(":".join(",".join(f"{v:.4f}" for v in row) for row in x)
                         + f":{label}")
        (folder / f"Synth_{part}.ts").write_text("\n".join(lines) + "\n")


def timed_train(argv: list[str]) -> int:
    from rnnkit import distributed as dist
    from rnnkit.cli import main
    from rnnkit.commands import train

    dist.init()
    clock = {"allreduce": 0.0, "wait": 0.0, "steps": 0, "passes": 0.0}
    real_sum, real_pass = dist._sum_flat, train._training_pass

    def sum_flat(flat):
        if dist._comm is not None:
            t0 = time.perf_counter()
            dist._comm.Barrier()
            t1 = time.perf_counter()
            total = real_sum(flat)
            clock["wait"] += t1 - t0
            clock["allreduce"] += time.perf_counter() - t1
            clock["steps"] += 1
            return total
        clock["steps"] += 1
        return real_sum(flat)

    def training_pass(*args):
        t0 = time.perf_counter()
        try:
            return real_pass(*args)
        finally:
            clock["passes"] += time.perf_counter() - t0

    dist._sum_flat, train._training_pass = sum_flat, training_pass
    t0 = time.perf_counter()
    code = main(["train", *argv])
    clock["wall"] = time.perf_counter() - t0
    if dist.get_rank() == 0:
        clock["ranks"] = dist.get_world_size()
        clock["allreduce_share_of_step"] = clock["allreduce"] / clock["passes"]
        clock["wait_share_of_step"] = clock["wait"] / clock["passes"]
        print(json.dumps(clock), file=sys.stderr)
    return code


def allreduce_time(floats: int, repeats: int) -> None:
    from rnnkit import distributed as dist

    dist.init()
    rng = np.random.default_rng(dist.get_rank())
    grads = {"a": rng.standard_normal(floats // 2, np.float32),
             "b": rng.standard_normal(floats - floats // 2, np.float32)}
    times = []
    for _ in range(repeats):
        if dist._comm is not None:
            dist._comm.Barrier()
        t0 = time.perf_counter()
        dist.all_reduce(grads)
        times.append(time.perf_counter() - t0)
    if dist.get_rank() == 0:
        print(json.dumps({"ranks": dist.get_world_size(), "floats": floats,
                          "median_ms": 1e3 * float(np.median(times)),
                          "p90_ms": 1e3 * float(np.percentile(times, 90))}))


def dask_throughput(model_path: str, copies: int) -> None:
    from rnnkit import dask as rdask
    from rnnkit.commands.predict import load_classifier
    from rnnkit.data import load_dataset

    model = load_classifier(model_path)
    _, test = load_dataset("JapaneseVowels")
    series = list(test.series) * copies
    model.predict_proba(series[:512])  # compiled and warm
    t0 = time.perf_counter()
    plain = model.predict_proba(series)
    t_plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    cold = rdask.predict_proba(model_path, series, "local")
    t_cold = time.perf_counter() - t0
    with rdask.connect("local") as client:
        rdask.predict_proba(model_path, series[:2048], client)  # workers warm
        t0 = time.perf_counter()
        warm = rdask.predict_proba(model_path, series, client)
        t_warm = time.perf_counter() - t0
    assert np.array_equal(plain, cold) and np.array_equal(plain, warm)
    n = len(series)
    print(json.dumps({"series": n, "plain_s": t_plain, "plain_per_s": n / t_plain,
                      "dask_local_with_start_s": t_cold, "dask_local_with_start_per_s":
                      n / t_cold, "dask_local_running_s": t_warm,
                      "dask_local_running_per_s": n / t_warm, "equal": True}))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "train":
        sys.exit(timed_train(sys.argv[2:]))
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    d = sub.add_parser("data")
    d.add_argument("folder", type=Path)
    d.add_argument("--series", type=int, default=1024)
    d.add_argument("--length", type=int, default=100)
    d.add_argument("--channels", type=int, default=16)
    a = sub.add_parser("allreduce")
    a.add_argument("--floats", type=int, default=140425)  # the main job's parameters
    a.add_argument("--repeats", type=int, default=300)
    p = sub.add_parser("predict")
    p.add_argument("model")
    p.add_argument("--copies", type=int, default=55)
    args = parser.parse_args()
    if args.what == "data":
        write_data(args.folder, args.series, args.length, args.channels)
    elif args.what == "allreduce":
        allreduce_time(args.floats, args.repeats)
    else:
        dask_throughput(args.model, args.copies)
