"""Predict the classes of the series in a .ts file with a model saved by `rnnkit train`.

Prints one class name per line to stdout, in the file's order; when the file has
labels, the accuracy goes to stderr (so stdout stays one prediction per line).

Examples:
  rnnkit predict --model runs/20250101-120000/model.safetensors --data MyProblem_TEST.ts
  rnnkit predict --model runs/20250101-120000 --data new_series.ts > predictions.txt
  rnnkit predict --model runs/x --data big.ts --dask local            (worker processes here)
  rnnkit predict --model runs/x --data big.ts --dask tcp://host:8786  (a running scheduler's)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._argtypes import nonnegative_float as _nonnegative_float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="FILE",
                        help="model.safetensors written by rnnkit train (or its folder)")
    parser.add_argument("--data", required=True, metavar="FILE.ts",
                        help="series to classify, in the .ts format (labels optional)")
    parser.add_argument("--proba", action="store_true",
                        help="also print each class probability, tab-separated")
    parser.add_argument("--dask", metavar="local|ADDRESS",
                        help="classify on a Dask cluster, with the same results: 'local' "
                             "starts worker processes on this machine (closed after), "
                             "tcp://host:8786 uses a running scheduler's workers "
                             "(pip install 'rnnkit[dask]')")
    parser.add_argument("--dask-timeout", type=_nonnegative_float, default=10.0,
                        metavar="SECONDS",
                        help="give up reaching the --dask scheduler after this (default 10)")


def load_classifier(path: str | Path):
    """The :class:`rnnkit.models.SequenceClassifier` saved at ``path`` (a file or the
    run folder holding ``model.safetensors``)."""
    import rnnkit
    from rnnkit.models import SequenceClassifier

    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        model = rnnkit.load_module(path)
    except PermissionError:
        raise PermissionError(f"cannot read model file {path}: permission denied") from None
    except Exception as error:  # noqa: BLE001 - whatever broke, the file is not ours
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        reason = reason.replace(str(path), "it").split(";")[0]
        raise ValueError(f"{path} is not a model saved by rnnkit train ({reason})") from None
    if not isinstance(model, SequenceClassifier):
        raise ValueError(f"{path} holds an rnnkit {type(model).__name__}, not a model saved by "
                         "rnnkit train (a SequenceClassifier)")
    return model


def run(args: argparse.Namespace) -> int:
    from .. import data as D

    D.require("aeon", purpose="rnnkit predict")
    model = load_classifier(args.model)
    split = D.read_ts(args.data)
    expected = model.rnn.input_size
    if split.num_channels != expected:
        raise ValueError(f"{args.data} has {split.num_channels} channels per step, but the model "
                         f"was trained on {expected}")
    if args.dask is None:
        proba = model.predict_proba(split.series)
    else:  # the file's bytes go to the workers, each loads the model once
        from .. import dask as rdask

        proba = rdask.predict_proba(args.model, split.series, args.dask,
                                    timeout=args.dask_timeout)
    names = [model.classes[k] for k in proba.argmax(axis=1)]
    lines = []
    for name, p in zip(names, proba):
        if args.proba:
            lines.append(name + "\t" + "\t".join(f"{c}={v:.4f}" for c, v in
                                                 zip(model.classes, p)))
        else:
            lines.append(name)
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
    if split.labels is not None:
        correct = sum(a == b for a, b in zip(names, split.labels))
        print(f"accuracy {100 * correct / len(names):.2f}% ({correct}/{len(names)})",
              file=sys.stderr)
    return 0
