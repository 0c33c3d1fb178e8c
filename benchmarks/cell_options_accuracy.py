"""Accuracy of the cell options in the main job: `rnnkit train` (JapaneseVowels, every
other setting its default) with each option alone and all four together, seeds 0-4.

Each run is its own `rnnkit train` process (`python -m rnnkit.cli train --seed S
--out DIR/<set>-s<S> <flags>`), one at a time; the test accuracy and the wall time are
read from its metrics.json (the "wall time" that `rnnkit train` prints: data, training
and evaluation, not the interpreter's start). The runs go seed by seed, every option set
at each seed, so that a change in the machine's load falls on all of them alike. A run
whose metrics.json is already in --out is read, not run again (an interrupted study
continues). Prints a markdown table: option set, the flags, mean test accuracy, its
min-max over the seeds, mean wall time per run.

  python benchmarks/cell_options_accuracy.py --out runs/cell-options
  python benchmarks/cell_options_accuracy.py --seeds 0 --only recurrent-dropout \\
      --recurrent-dropout 0.1                  # one value on one seed, to choose P

docs/cell_options.md gives the table and the command that produced it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

RECURRENT_DROPOUT = 0.25
ZONEOUT = 0.1


def option_sets(recurrent_dropout: float, zoneout: float) -> dict[str, list[str]]:
    """Name -> the flags of `rnnkit train`, in the order of the table."""
    rd = ["--recurrent-dropout", f"{recurrent_dropout:g}"]
    zo = ["--zoneout", f"{zoneout:g}"]
    return {
        "default": [],
        "layer-norm": ["--layer-norm"],
        "recurrent-dropout": rd,
        "zoneout": zo,
        "peepholes": ["--peepholes"],
        "all four": ["--layer-norm", *rd, *zo, "--peepholes"],
    }


def run_one(out: Path, flags: list[str], seed: int, extra: list[str], env: dict) -> dict:
    """One `rnnkit train` process (or the metrics.json it left before). A run that fails
    (a diverged loss is `rnnkit train`'s exit 2) is recorded with its message, and
    the study goes on."""
    metrics, failed = out / "metrics.json", out / "failed.txt"
    if not metrics.exists() and not failed.exists():
        argv = [sys.executable, "-m", "rnnkit.cli", "train", "--seed", str(seed),
                "--out", str(out), *flags, *extra]
        t0 = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, env=env)
        out.mkdir(parents=True, exist_ok=True)
        (out / "stdout.txt").write_text(done.stdout)
        (out / "stderr.txt").write_text(done.stderr)
        (out / "process_seconds.txt").write_text(f"{time.perf_counter() - t0:.2f}\n")
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
            failed.write_text(f"exit {done.returncode}: {last}\n")
    if failed.exists():
        return {"failed": failed.read_text().strip()}
    m = json.loads(metrics.read_text())
    return {"accuracy": m["test_accuracy"], "wall": m["wall_time_seconds"]}


def table(results: dict[str, list[dict]], sets: dict[str, list[str]]) -> str:
    lines = ["| option set | flags | mean test accuracy | min–max | mean wall time per run |",
             "|---|---|---|---|---|"]
    for name, runs in results.items():
        flags = " ".join(sets[name]) or "(none)"
        done = [r for r in runs if "accuracy" in r]
        failed = len(runs) - len(done)
        note = f" ({failed} of {len(runs)} runs failed)" if failed else ""
        if not done:
            lines.append(f"| {name} | `{flags}` | –{note} | – | – |")
            continue
        acc = [100 * r["accuracy"] for r in done]
        wall = statistics.mean(r["wall"] for r in done)
        lines.append(f"| {name} | `{flags}` | {statistics.mean(acc):.2f}%{note} | "
                     f"{min(acc):.2f}–{max(acc):.2f}% | {wall:.1f} s |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/cell-options"),
                        help="one folder per run inside it (default runs/cell-options)")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="default 0,1,2,3,4")
    parser.add_argument("--only", help="comma-separated option sets (default: all)")
    parser.add_argument("--recurrent-dropout", type=float, default=RECURRENT_DROPOUT,
                        metavar="P", help=f"default {RECURRENT_DROPOUT}")
    parser.add_argument("--zoneout", type=float, default=ZONEOUT, metavar="P",
                        help=f"default {ZONEOUT}")
    parser.add_argument("--blas-threads", type=int, metavar="N",
                        help="set OPENBLAS_NUM_THREADS=N in the runs (default: unset)")
    parser.add_argument("--json", type=Path, help="also write every run's numbers here")
    parser.add_argument("extra", nargs="*",
                        help="more `rnnkit train` arguments for every run (after --)")
    args = parser.parse_args(argv)

    sets = option_sets(args.recurrent_dropout, args.zoneout)
    if args.only:
        unknown = set(args.only.split(",")) - set(sets)
        if unknown:
            parser.error(f"unknown option sets {sorted(unknown)}; known: {list(sets)}")
        sets = {k: v for k, v in sets.items() if k in args.only.split(",")}
    seeds = [int(s) for s in args.seeds.split(",")]
    env = dict(os.environ)
    if args.blas_threads is not None:
        env["OPENBLAS_NUM_THREADS"] = str(args.blas_threads)
    suffix = {"recurrent-dropout": f"-{args.recurrent_dropout:g}",
              "zoneout": f"-{args.zoneout:g}",
              "all four": f"-{args.recurrent_dropout:g}-{args.zoneout:g}"}

    results: dict[str, list[dict]] = {name: [] for name in sets}
    for seed in seeds:  # seed by seed: every option set sees the same machine load
        for name, flags in sets.items():
            folder = args.out / f"{name.replace(' ', '-')}{suffix.get(name, '')}-s{seed}"
            r = run_one(folder, flags, seed, args.extra, env)
            results[name].append({"seed": seed, **r})
            line = r["failed"] if "failed" in r else \
                f"test accuracy {100 * r['accuracy']:.2f}%, wall {r['wall']:.1f} s"
            print(f"{name:<18} seed {seed}: {line}", file=sys.stderr, flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps({"sets": sets, "results": results}, indent=2) + "\n")
    print(table(results, sets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
