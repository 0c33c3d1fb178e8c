"""How `rnnkit train`'s defaults were chosen: one variant of the settings over bundled
data sets and seeds 0, 1, 2, one JSON line per run (test accuracy, fit seconds).

  python benchmarks/defaults_variants.py NAME '{"pool": "mean"}' BasicMotions,GunPoint

A variant is a JSON object of `rnnkit train` settings over the defaults of the code
being run; docs/datasets.md gives the variants tried and their results
(benchmarks/defaults_variants.jsonl)."""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from rnnkit import data as D
from rnnkit.commands.train import train_series


def run(name: str, seed: int, settings: dict) -> dict:
    train, test = D.load_dataset(name)
    t = time.perf_counter()
    model, _ = train_series(train, {**settings, "seed": seed})
    seconds = time.perf_counter() - t
    accuracy = float(np.mean(np.asarray(model.predict(test.series)) == test.labels))
    return {"data": name, "seed": seed, "acc": accuracy, "fit_s": round(seconds, 1)}


if __name__ == "__main__":
    tag, settings, names = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3].split(",")
    for name in names:
        for seed in (0, 1, 2):
            print(json.dumps({"tag": tag, "settings": settings, **run(name, seed, settings)}),
                  flush=True)
