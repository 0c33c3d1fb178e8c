"""rnnkit's estimators against aeon's baselines on every data set aeon bundles.

Every classification and regression data set that aeon ships inside its package (read
offline, on its fixed train/test split) is fit by, in the same process:

  rnnkit      RNNClassifier / RNNRegressor with their defaults (those of `rnnkit train`)
  1-NN DTW    aeon's KNeighborsTimeSeriesClassifier / Regressor(distance="dtw"), full window
  MiniRocket  aeon's MiniRocketClassifier / Regressor (10,000 kernels, ridge)
  dummy       aeon's DummyClassifier (prior) / DummyRegressor (mean)

and scored on the test split: accuracy, or RMSE for regression; fit and predict time
in seconds. rnnkit and MiniRocket are random: each runs with random_state 0, 1, 2 and
the table gives the mean and the range. MiniRocket takes equal lengths only: unequal
sets reach it padded with zeros to the longest series of train and test (aeon's Padder).

Results go to a JSON file (one record per data set, method and seed; a rerun with
--only replaces those data sets' records), from which --report writes the markdown
table and the plot (rnnkit against each baseline, one point per data set).

  nice python benchmarks/aeon_datasets.py                     # all, ~20 min on 2 cores
  python benchmarks/aeon_datasets.py --only GunPoint,Covid3Month
  python benchmarks/aeon_datasets.py --report                 # docs/datasets.md, .png
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "aeon_datasets.json"
TABLE = ROOT / "docs" / "datasets.md"
PLOT = ROOT / "docs" / "datasets.png"
SEEDS = (0, 1, 2)
BEGIN, END = "<!-- tables: benchmarks/aeon_datasets.py --report -->", "<!-- end of tables -->"
METHODS = ("rnnkit", "1-NN DTW", "MiniRocket", "dummy")


def bundled() -> tuple[list[str], list[str]]:
    """Names of the classification and the regression data sets in aeon's package data
    (a folder with NAME_TRAIN.ts and NAME_TEST.ts; the header says which task)."""
    import aeon.datasets

    root = Path(aeon.datasets.__file__).parent / "data"
    classification, regression = [], []
    for folder in sorted(root.iterdir(), key=lambda p: p.name.lower()):
        train = folder / f"{folder.name}_TRAIN.ts"
        if not (train.is_file() and (folder / f"{folder.name}_TEST.ts").is_file()):
            continue
        header = train.read_text(errors="replace").split("@data")[0].lower()
        if "@classlabel true" in header:
            classification.append(folder.name)
        elif "@targetlabel true" in header:
            regression.append(folder.name)
    return classification, regression


def load(name: str, regression: bool):
    import aeon.datasets

    root = Path(aeon.datasets.__file__).parent / "data"
    loader = aeon.datasets.load_regression if regression else aeon.datasets.load_classification
    parts = [loader(name, split=split, extract_path=str(root)) for split in ("train", "test")]
    (X, y), (X_test, y_test) = [(p[0], p[1]) for p in parts]
    if regression:
        y, y_test = y.astype(np.float64), y_test.astype(np.float64)
    return X, y, X_test, y_test


def lengths(X) -> list[int]:
    return [x.shape[-1] for x in X]


def methods(regression: bool, max_length: int, equal: bool):
    """``{name: (make(seed), random)}`` for the data set's task."""
    from aeon.classification import DummyClassifier
    from aeon.classification.convolution_based import MiniRocketClassifier
    from aeon.classification.distance_based import KNeighborsTimeSeriesClassifier
    from aeon.regression import DummyRegressor
    from aeon.regression.convolution_based import MiniRocketRegressor
    from aeon.regression.distance_based import KNeighborsTimeSeriesRegressor
    from aeon.transformations.collection.unequal_length import Padder
    from sklearn.pipeline import make_pipeline

    from rnnkit.estimators import RNNClassifier, RNNRegressor

    def minirocket(seed):
        cls = MiniRocketRegressor if regression else MiniRocketClassifier
        if equal:
            return cls(random_state=seed)
        return make_pipeline(Padder(padded_length=max_length), cls(random_state=seed))

    if regression:
        return {
            "rnnkit": (lambda seed: RNNRegressor(random_state=seed), True),
            "1-NN DTW": (lambda seed: KNeighborsTimeSeriesRegressor(distance="dtw"), False),
            "MiniRocket": (minirocket, True),
            "dummy": (lambda seed: DummyRegressor(), False),
        }
    return {
        "rnnkit": (lambda seed: RNNClassifier(random_state=seed), True),
        "1-NN DTW": (lambda seed: KNeighborsTimeSeriesClassifier(distance="dtw"), False),
        "MiniRocket": (minirocket, True),
        "dummy": (lambda seed: DummyClassifier(), False),
    }


def warm_up() -> None:
    """Fit and predict every method once on a few series, untimed: numba compiles (or
    loads from its cache) the kernels of aeon's and rnnkit's methods at their first call,
    which would otherwise be charged to the first data set."""
    X, y, _, _ = load("UnitTest", regression=False)
    keep = np.concatenate([np.flatnonzero(y == c)[:4] for c in np.unique(y)])
    X, y = X[keep], y[keep]
    y_reg = np.linspace(0.0, 1.0, len(X))
    for regression, target in ((False, y), (True, y_reg)):
        for equal in (True, False):
            for method, (make, _) in methods(regression, X.shape[-1], equal).items():
                if method == "rnnkit":
                    make(0).set_params(epochs=1).fit(X, target).predict(X)
                else:
                    make(0).fit(X, target).predict(X)


def run_one(name: str, regression: bool, skip: set[str]) -> list[dict]:
    X, y, X_test, y_test = load(name, regression)
    train_lengths, test_lengths = lengths(X), lengths(X_test)
    equal = len(set(train_lengths + test_lengths)) == 1
    info = {
        "data": name, "task": "regression" if regression else "classification",
        "train": len(X), "test": len(X_test), "channels": int(np.shape(X[0])[0]),
        "length": [min(train_lengths + test_lengths), max(train_lengths + test_lengths)],
        "classes": None if regression else len(np.unique(y)),
    }
    records = []
    for method, (make, random) in methods(regression, info["length"][1], equal).items():
        if method in skip:
            continue
        for seed in SEEDS if random else (None,):
            estimator = make(seed)
            t0 = time.perf_counter()
            estimator.fit(X, y)
            t1 = time.perf_counter()
            pred = estimator.predict(X_test)
            t2 = time.perf_counter()
            if regression:
                score = float(np.sqrt(np.mean((np.asarray(pred, np.float64) - y_test) ** 2)))
            else:
                score = float(np.mean(np.asarray(pred) == y_test))
            record = {**info, "method": method, "seed": seed, "score": score,
                      "fit_seconds": t1 - t0, "predict_seconds": t2 - t1}
            records.append(record)
            print(f"{name:24s} {method:11s} seed {seed}  {'rmse' if regression else 'acc'} "
                  f"{score:.4f}  fit {t1 - t0:7.1f} s  predict {t2 - t1:6.2f} s", flush=True)
    return records


# ---------------------------------------------------------------- report


def _summary(records: list[dict]) -> dict:
    """``{(data, method): {"mean", "lo", "hi", "fit", "predict", "n"}}``."""
    out = {}
    for key in sorted({(r["data"], r["method"]) for r in records}):
        rs = [r for r in records if (r["data"], r["method"]) == key]
        s = np.array([r["score"] for r in rs])
        out[key] = {"mean": s.mean(), "lo": s.min(), "hi": s.max(), "n": len(rs),
                    "fit": np.mean([r["fit_seconds"] for r in rs]),
                    "predict": np.mean([r["predict_seconds"] for r in rs])}
    return out


def _cell(s: dict, percent: bool) -> str:
    scale, digits = (100, 1) if percent else (1, 4)
    text = f"{scale * s['mean']:.{digits}f}"
    if s["n"] > 1:
        text += f" ({scale * s['lo']:.{digits}f}–{scale * s['hi']:.{digits}f})"
    return text


def report(results: dict) -> str:
    records = results["records"]
    summary = _summary(records)
    info = {r["data"]: r for r in records}
    lines = []
    for task, percent, what in (("classification", True, "test accuracy, %"),
                                ("regression", False, "test RMSE (lower is better)")):
        names = sorted({r["data"] for r in records if r["task"] == task}, key=str.lower)
        if not names:
            continue
        lines += [f"### {task.capitalize()}: {what}", "",
                  "| data set | train / test | channels | length | "
                  + " | ".join(METHODS) + " |",
                  "|---|---|---|---|" + "---|" * len(METHODS)]
        for name in names:
            i = info[name]
            length = (f"{i['length'][0]}" if i["length"][0] == i["length"][1]
                      else f"{i['length'][0]}–{i['length'][1]}")
            classes = f", {i['classes']} classes" if i["classes"] else ""
            cells = [_cell(summary[(name, m)], percent) if (name, m) in summary else "–"
                     for m in METHODS]
            lines.append(f"| {name} | {i['train']} / {i['test']}{classes} | {i['channels']} | "
                         f"{length} | " + " | ".join(cells) + " |")
        lines += ["", f"Fit / predict time, seconds ({task}; mean over the runs):", "",
                  "| data set | " + " | ".join(METHODS) + " |",
                  "|---|" + "---|" * len(METHODS)]
        for name in names:
            cells = [f"{summary[(name, m)]['fit']:.1f} / {summary[(name, m)]['predict']:.2f}"
                     if (name, m) in summary else "–" for m in METHODS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    summary = _summary(results["records"])
    tasks = [t for t in ("classification", "regression")
             if any(r["task"] == t for r in results["records"])]
    baselines = METHODS[1:]
    fig = Figure(figsize=(4.2 * len(baselines), 4.2 * len(tasks)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(tasks), len(baselines)))
    for row, task in zip(axes, tasks):
        names = sorted({r["data"] for r in results["records"] if r["task"] == task})
        for ax, baseline in zip(row, baselines):
            pts = [(summary[(n, baseline)]["mean"], summary[(n, "rnnkit")], n) for n in names
                   if (n, baseline) in summary and (n, "rnnkit") in summary]
            xs = np.array([p[0] for p in pts])
            ys = np.array([p[1]["mean"] for p in pts])
            err = np.array([[p[1]["mean"] - p[1]["lo"], p[1]["hi"] - p[1]["mean"]] for p in pts]).T
            if task == "classification":
                xs, ys, err = 100 * xs, 100 * ys, 100 * err
                lo, hi = 0, 100
            else:
                lo, hi = 0, 1.05 * max(xs.max(), (ys + err[1]).max())
            ax.plot([lo, hi], [lo, hi], color="gray", linestyle="--", linewidth=1)
            ax.errorbar(xs, ys, yerr=err, fmt="o", capsize=3)
            for x, y_, (_, _, n) in zip(xs, ys, pts):
                ax.annotate(n, (x, y_), textcoords="offset points", xytext=(4, -10),
                            fontsize=7)
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
            ax.set_aspect("equal")
            ax.grid(alpha=0.3)
            unit = "accuracy, %" if task == "classification" else "RMSE"
            better = "above the diagonal" if task == "classification" else "below the diagonal"
            ax.set_xlabel(f"{baseline} ({unit})")
            ax.set_ylabel(f"rnnkit ({unit})")
            ax.set_title(f"{task}: rnnkit better {better}", fontsize=9)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated data sets (default: all bundled)")
    parser.add_argument("--skip", default="", help="comma-separated methods to leave out")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--report", action="store_true",
                        help=f"write {TABLE.name} tables and {PLOT.name} from the results")
    args = parser.parse_args(argv)
    results = (json.loads(args.results.read_text()) if args.results.exists()
               else {"records": []})
    if args.report:
        tables = report(results)
        print(tables)
        if TABLE.exists():  # between the markers of docs/datasets.md
            text = TABLE.read_text()
            start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
            TABLE.write_text(text[:start] + "\n" + tables + "\n" + text[end:])
            print(f"wrote the tables into {TABLE}")
        plot(results, PLOT)
        print(f"wrote {PLOT}")
        return 0
    import rnnkit

    classification, regression = bundled()
    wanted = set(args.only.split(",")) if args.only else None
    skip = {s for s in args.skip.split(",") if s}
    warm_up()
    for name in classification + regression:
        if wanted is not None and name not in wanted:
            continue
        records = run_one(name, name in regression, skip)
        results["records"] = [r for r in results["records"]
                              if not (r["data"] == name and r["method"] not in skip)] + records
        results["machine"] = {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                              "rnnkit": rnnkit.__version__, "numpy": np.__version__}
        args.results.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
