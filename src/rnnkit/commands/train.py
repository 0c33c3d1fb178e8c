"""Train a recurrent sequence classifier on a bundled or given data set.

With no arguments: a 2-layer bidirectional LSTM (hidden size 64, dropout 0.3,
input noise 0.3, Adam lr 5e-3 decayed 0.95 per epoch, 60 epochs) on JapaneseVowels
(aeon's copy, read offline): about 98% test accuracy in under a minute on 2 cores.
The head reads the final states and the last layer's outputs averaged over every
step (--pool both), and a series longer than 32 steps is read in patches of
consecutive steps (--patch). The recurrent layer's cell options are off unless asked
for: --layer-norm, --recurrent-dropout P, --zoneout P and (LSTM only) --peepholes
(docs/cell_options.md).

The model of the last epoch is kept. With --val-fraction F, each epoch is scored on
a stratified validation split of F of the training set, and the weights of the best
validation epoch are kept instead. Outputs in --out:

  model.safetensors   the model, with its config, class names and channel statistics
                      (rnnkit.load_module rebuilds it; rnnkit predict uses it)
  metrics.json        per-epoch loss/accuracy (train, validation), test accuracy,
                      wall time, versions
  curves.png          loss and accuracy per epoch
  confusion.png       test confusion matrix (validation's when there is no test set)
  checkpoint.safetensors  written atomically after every epoch: --resume DIR continues
                      an interrupted run and ends with the same weights, bit for bit

Examples:
  rnnkit train
  rnnkit train --model gru --hidden-size 32 --epochs 20 --out runs/gru
  rnnkit train --dataset BasicMotions --batch-size 8
  rnnkit train --data MyProblem_TRAIN.ts        (MyProblem_TEST.ts beside it is the test set)
  rnnkit train --resume runs/gru --epochs 40
  rnnkit train --layer-norm --zoneout 0.1 --out runs/ln-zoneout
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..io._atomic import write_atomically
from ._argtypes import fraction as _fraction
from ._argtypes import nonnegative_float as _nonnegative_float
from ._argtypes import nonnegative_int as _seed
from ._argtypes import positive_int as _positive_int

if TYPE_CHECKING:  # numpy and rnnkit's modules are imported where used: --help stays fast
    import numpy as np

    from ..data import Split
    from ..models import SequenceClassifier
    from ..optim import Optimizer

# Defaults of the options that shape the run. They are resolved in `run`, not by
# argparse, so that `--resume` can tell an option the user typed from a default.
DEFAULTS = {
    "dataset": "JapaneseVowels",
    "data": None,
    "test": None,
    "model": "lstm",
    "hidden_size": 64,
    "num_layers": 2,
    "bidirectional": True,
    "dropout": 0.3,
    "epochs": 60,
    "batch_size": 32,
    "lr": None,  # the optimizer's: see _LR
    "optimizer": "adam",
    "weight_decay": None,  # the optimizer's own default
    "lr_decay": 0.95,
    "noise": 0.3,
    "clip": 1.0,
    "val_fraction": 0.0,
    "seed": 0,
    "dtype": "float32",
    "patch": None,  # the smallest that reads every series in at most _MAX_STEPS steps
    "pool": "both",
    # the layer's cell options (API.md "Cell options (beyond torch)"): off by default
    "layer_norm": False,
    "recurrent_dropout": 0.0,
    "zoneout": 0.0,
    "peepholes": False,
}
_CELL_OPTIONS = ("layer_norm", "recurrent_dropout", "zoneout", "peepholes")
_LR = {"adam": 5e-3, "adamw": 5e-3, "sgd": 0.05}
_MAX_STEPS = 32  # --patch's default: at most this many recurrent steps per series
# may differ between an interrupted run and its resumption
_RESUMABLE = {"epochs"}

CHECKPOINT = "checkpoint.safetensors"
_FORMAT = "rnnkit-train-checkpoint"


# ---------------------------------------------------------------- arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = DEFAULTS
    data = parser.add_argument_group("data")
    source = data.add_mutually_exclusive_group()
    source.add_argument("--dataset", metavar="NAME",
                        help="a classification data set bundled with aeon "
                             f"(default {d['dataset']})")
    source.add_argument("--data", metavar="FILE.ts",
                        help="train on a .ts file; NAME_TEST.ts beside NAME_TRAIN.ts is "
                             "the test set")
    data.add_argument("--test", metavar="FILE.ts", help="test set for --data (a .ts file)")
    data.add_argument("--val-fraction", type=_fraction, metavar="F",
                      help="part of each class held out for validation, to keep the best "
                           "validation epoch instead of the last (default "
                           f"{d['val_fraction']}: none, the last epoch)")

    model = parser.add_argument_group("model")
    model.add_argument("--model", choices=["lstm", "gru", "rnn"],
                       help=f"recurrent layer (default {d['model']})")
    model.add_argument("--hidden-size", type=_positive_int, metavar="H",
                       help=f"default {d['hidden_size']}")
    model.add_argument("--num-layers", type=_positive_int, metavar="N",
                       help=f"default {d['num_layers']}")
    model.add_argument("--bidirectional", action=argparse.BooleanOptionalAction,
                       help="read each series both ways (default: yes)")
    model.add_argument("--dropout", type=_fraction, metavar="P",
                       help=f"before the head and between layers (default {d['dropout']})")
    model.add_argument("--dtype", choices=["float32", "float64"],
                       help=f"default {d['dtype']}")
    model.add_argument("--patch", type=_positive_int, metavar="P",
                       help="read P consecutive steps as one, so that long series take "
                            "fewer recurrent steps (default: "
                            + (f"{d['patch']})" if d["patch"] is not None else
                               f"the smallest P that reads the longest training series in "
                               f"at most {_MAX_STEPS} steps)"))
    model.add_argument("--pool", choices=["last", "mean", "both"],
                       help="classify from the final states, the outputs averaged over "
                            f"every step, or both side by side (default {d['pool']})")
    model.add_argument("--layer-norm", action=argparse.BooleanOptionalAction,
                       help="layer-normalize each step's two gate projections (and the "
                            "LSTM's cell state) (default: no)")
    model.add_argument("--recurrent-dropout", type=_fraction, metavar="P",
                       help="in training, drop units of h_{t-1} where the recurrence reads "
                            "it, one mask per series and layer (default "
                            f"{d['recurrent_dropout']}: none)")
    model.add_argument("--zoneout", type=_fraction, metavar="P",
                       help="in training, keep each unit of h_{t-1} instead of updating it "
                            f"with probability P (default {d['zoneout']}: none)")
    model.add_argument("--peepholes", action=argparse.BooleanOptionalAction,
                       help="the LSTM's cell state feeds its input, forget and output "
                            "gates; --model lstm only (default: no)")

    fit = parser.add_argument_group("training")
    fit.add_argument("--epochs", type=_positive_int, help=f"default {d['epochs']}")
    fit.add_argument("--batch-size", type=_positive_int, metavar="N",
                     help=f"default {d['batch_size']}")
    fit.add_argument("--optimizer", choices=["adam", "adamw", "sgd"],
                     help=f"default {d['optimizer']} (sgd: momentum 0.9)")
    fit.add_argument("--lr", type=_nonnegative_float,
                     help=f"learning rate (default {_LR['adam']} for adam/adamw, "
                          f"{_LR['sgd']} for sgd)")
    fit.add_argument("--lr-decay", type=_nonnegative_float, metavar="GAMMA",
                     help="multiply the learning rate by GAMMA after every epoch "
                          f"(default {d['lr_decay']})")
    fit.add_argument("--weight-decay", type=_nonnegative_float, metavar="W",
                     help="default: the optimizer's (0 for adam and sgd, 0.01 for adamw)")
    fit.add_argument("--clip", type=_nonnegative_float, metavar="NORM",
                     help=f"clip the gradient norm; 0: never (default {d['clip']})")
    fit.add_argument("--noise", type=_nonnegative_float, metavar="SIGMA",
                     help="add Gaussian noise of this standard deviation (in units of each "
                          f"channel's std) to training inputs (default {d['noise']})")
    fit.add_argument("--seed", type=_seed, help=f"default {d['seed']}")

    run_ = parser.add_argument_group("run")
    run_.add_argument("--out", metavar="DIR", help="output folder (default runs/<timestamp>)")
    run_.add_argument("--resume", metavar="DIR",
                      help="continue the interrupted run in DIR (--epochs may be raised)")
    # test hook: behave as if killed right after this epoch's checkpoint
    run_.add_argument("--stop-after-epoch", type=_positive_int, help=argparse.SUPPRESS)


# ---------------------------------------------------------------- files


def _write_json(path: Path, obj) -> None:
    write_atomically(path, (json.dumps(obj, indent=2) + "\n").encode())


def _prepare_out(out: Path, resuming: bool) -> None:
    """Create ``out`` and prove it writable, or fail in one line before any work."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise PermissionError(f"cannot write to output folder {out}: {reason}") from None
    if not resuming and ((out / CHECKPOINT).exists() or (out / "model.safetensors").exists()):
        raise ValueError(f"{out} already holds a run; continue it with --resume {out} or "
                         "choose another --out")


def _default_out() -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out, k = Path("runs") / stamp, 1
    while out.exists():
        k += 1
        out = Path("runs") / f"{stamp}-{k}"
    return out


# ---------------------------------------------------------------- checkpoint


def _to_json_tree(obj, arrays: dict, prefix: str):
    """``obj`` with every ndarray replaced by a reference into ``arrays`` (JSON-able)."""
    import numpy as np

    if isinstance(obj, np.ndarray):
        arrays[prefix] = np.array(obj, order="C")  # keeps 0-d (ascontiguousarray would not)
        return {"__array__": prefix}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):  # keys may be ints (torch-style optimizer state)
        return {"__items__": [[k, _to_json_tree(v, arrays, f"{prefix}/{k}")]
                              for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [_to_json_tree(v, arrays, f"{prefix}/{i}") for i, v in enumerate(obj)]
    return obj


def _from_json_tree(obj, arrays: dict):
    if isinstance(obj, dict) and "__array__" in obj:
        return arrays[obj["__array__"]]
    if isinstance(obj, dict) and "__items__" in obj:
        return {k: _from_json_tree(v, arrays) for k, v in obj["__items__"]}
    if isinstance(obj, list):
        return [_from_json_tree(v, arrays) for v in obj]
    return obj


def _save_checkpoint(path: Path, job: _Training, settings: dict, epoch: int) -> None:
    """The run after ``epoch``: weights (the current and the best), optimizer, both rngs,
    history; ``--resume`` continues from it to the same weights, bit for bit."""
    import numpy as np
    import safetensors.numpy

    import rnnkit

    from .. import distributed as dist

    streams = dist._gather(rnnkit.default_generator().bit_generator.state)  # each rank's
    if not dist._is_root():  # under mpirun, rank 0 writes
        return
    arrays = {}
    for name, p in job.model.state_dict().items():
        arrays[f"model/{name}"] = np.array(p, order="C")
    for name, p in (job.best_state or {}).items():
        arrays[f"best/{name}"] = np.array(p, order="C")
    meta = {
        "settings": settings, "epoch": epoch, "history": job.history, "best": job.best,
        "shuffle_rng": job.shuffle_rng.bit_generator.state,
        "elapsed_seconds": job.elapsed(),
    }
    meta["format"] = _FORMAT
    meta["optimizer_state"] = _to_json_tree(job.optimizer.state_dict(), arrays, "optim")
    meta["rnnkit_rng"] = rnnkit.default_generator().bit_generator.state
    if len(streams) > 1:  # the dropout streams of ranks 0 .. K-1
        meta["rnnkit_rng_ranks"] = streams
    data = safetensors.numpy.save(arrays, metadata={_FORMAT: json.dumps(meta)})
    write_atomically(path, data)


def _load_checkpoint(path: Path) -> tuple[dict, dict]:
    """Returns ``(meta, arrays)``."""
    import safetensors.numpy

    if not path.exists():
        raise FileNotFoundError(f"no checkpoint to resume: {path} does not exist")
    try:
        data = path.read_bytes()
        arrays = safetensors.numpy.load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8: 8 + header_len])
        meta = json.loads(header["__metadata__"][_FORMAT])
    except PermissionError:
        raise
    except Exception:  # noqa: BLE001 - any damage means the same thing to the user
        raise ValueError(f"{path} is not a checkpoint written by rnnkit train") from None
    return meta, arrays


# ---------------------------------------------------------------- settings


def _resolve(args: argparse.Namespace) -> tuple[dict, dict | None, dict | None, Path]:
    """The run's settings, the checkpoint being resumed (or None) and the output folder."""
    given = {k: getattr(args, k) for k in DEFAULTS if getattr(args, k) is not None}
    if given.get("data") is None and args.test is not None:
        raise ValueError("--test needs --data (bundled data sets bring their own test split)")
    if args.resume is None:
        settings = {**DEFAULTS, **given}
        if settings["lr"] is None:  # recorded as used, and compared so on --resume
            settings["lr"] = _LR[settings["optimizer"]]
        if settings["data"] is not None:
            settings["dataset"] = None
            settings["data"] = str(Path(settings["data"]).resolve())
            if settings["test"] is not None:
                settings["test"] = str(Path(settings["test"]).resolve())
        _check_options(settings)
        out = Path(args.out) if args.out is not None else _default_out()
        return settings, None, None, out
    out = Path(args.resume)
    if args.out is not None and Path(args.out).resolve() != out.resolve():
        raise ValueError("--resume DIR writes to DIR; leave out --out")
    if not out.is_dir():
        raise FileNotFoundError(f"no run to resume: {out} is not a folder")
    meta, arrays = _load_checkpoint(out / CHECKPOINT)
    # runs checkpointed before the cell options existed had them off
    settings = {**{key: DEFAULTS[key] for key in _CELL_OPTIONS}, **meta["settings"]}
    for key, value in given.items():
        if key in ("data", "test") and value is not None:
            value = str(Path(value).resolve())
        if key not in _RESUMABLE and value != settings.get(key):
            flag = "--" + key.replace("_", "-")
            raise ValueError(f"{flag} {value} differs from the run being resumed "
                             f"({settings.get(key)}); resume with the same settings "
                             "(only --epochs may change)")
        settings[key] = value
    _check_options(settings)
    return settings, meta, arrays, out


def _check_options(settings: dict) -> None:
    """The combinations of options that argparse cannot refuse on its own."""
    if settings["peepholes"] and settings["model"] != "lstm":
        raise ValueError(f"--peepholes needs --model lstm: peepholes read the LSTM's cell "
                         f"state, which --model {settings['model']} does not have")


# ---------------------------------------------------------------- the job


def run(args: argparse.Namespace) -> int:
    """Train as ``args`` say, or continue the run of ``--resume``; returns the exit status."""
    from .. import data as D
    from .. import distributed as dist

    dist.init()  # under mpirun: joins the other ranks; a failure on one then ends them all
    if not dist._is_root():  # only rank 0 prints and writes
        sys.stdout = open(os.devnull, "w")  # for the life of the process
    D.require("aeon", "matplotlib", "tqdm")
    settings, meta, arrays, out = _resolve(args)
    if dist._is_root():
        _prepare_out(out, resuming=meta is not None)
    started = time.perf_counter()

    data = _prepare_data(settings)
    job = _start_training(settings, data, meta, arrays, out, started)
    _join_ranks(job, settings, meta)
    epochs = settings["epochs"]
    for epoch in range(job.start_epoch + 1, epochs + 1):
        _train_epoch(job, data, settings, epoch)
        _save_checkpoint(out / CHECKPOINT, job, settings, epoch)
        if args.stop_after_epoch is not None and epoch >= args.stop_after_epoch:
            print(f"stopped after epoch {epoch} (--stop-after-epoch); "
                  f"continue with --resume {out}")
            return 0
    if job.start_epoch >= epochs:
        print(f"{out} had already trained {job.start_epoch} epochs; writing its outputs again "
              "(pass a larger --epochs to train longer)")
    result, confusion = _evaluate_best(job, data)
    if dist._is_root():
        _write_outputs(out, settings, data, job, result, confusion)
    return 0


def _join_ranks(job: _Training, settings: dict, meta: dict | None) -> None:
    """Under K ranks (``mpirun``): every rank starts from rank 0's weights, and each
    draws dropout masks from a stream of its own (resumed from the checkpoint when it
    holds this rank's), so the ranks' rows do not share masks. One process: nothing."""
    import numpy as np

    import rnnkit

    from .. import distributed as dist

    dist.broadcast_parameters(job.model)
    rank = dist.get_rank()
    if rank == 0:
        return
    saved = (meta or {}).get("rnnkit_rng_ranks", [])
    state = saved[rank] if rank < len(saved) else \
        np.random.default_rng([settings["seed"], rank]).bit_generator.state
    rnnkit.default_generator().bit_generator.state = state


def train_series(train: Split, settings: dict | None = None, *, regression: bool = False,
                 verbose: bool = False):
    """Train on series in memory as ``rnnkit train`` trains: the same steps, defaults and
    seeds, without files. The estimators of :mod:`rnnkit.estimators` call it.

    Args:
        train: the training series and their labels (class names, or numbers when
            ``regression``); ``train.classes`` fixes the order of the logits.
        settings: any of ``DEFAULTS``' keys; the rest take the defaults.
        regression: train a :class:`~rnnkit.models.SequenceRegressor` on mean squared
            error instead of a classifier on cross-entropy.
        verbose: print what ``rnnkit train`` prints.

    Returns:
        ``(model, history)``: the model with the weights that ``rnnkit train`` would save,
        and the per-epoch records of its ``metrics.json``.
    """
    import contextlib
    import io

    unknown = sorted(set(settings or {}) - set(DEFAULTS))
    if unknown:
        raise TypeError(f"unknown training settings {unknown}; known: {sorted(DEFAULTS)}")
    settings = {**DEFAULTS, **(settings or {}), "dataset": None}
    if settings["lr"] is None:
        settings["lr"] = _LR[settings["optimizer"]]
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stdout if verbose else io.StringIO()):
        data = _split_data(settings, train, None, train.source, regression)
        job = _start_training(settings, data, None, None, None, started)
        for epoch in range(1, settings["epochs"] + 1):
            _train_epoch(job, data, settings, epoch)
    job.model.load_state_dict(job.best_state)
    job.model.eval()
    # one inference call builds the layers' lazily cached weights now, so that the first
    # predict changes nothing in the model (aeon checks that predict leaves state as is)
    job.model._logits(train.series[:1])
    return job.model, job.history


# ---------------------------------------------------------------- data step


@dataclass
class _Data:
    """The run's series, split and encoded the same way on every (re)start."""

    name: str  # the data set's, for messages and titles
    classes: list[str] | None  # class names, in logit order; None: regression
    num_channels: int
    fit: Split  # the part of the training set trained on
    val: Split  # the part held out for validation (may be empty)
    test: Split | None
    y_fit: np.ndarray  # class indices of fit, val and test
    y_val: np.ndarray
    y_test: np.ndarray | None
    mean: np.ndarray  # fit's per-channel statistics, (C,) each
    std: np.ndarray
    shuffle_seed: np.random.SeedSequence  # of the batch order and the input noise
    target: tuple[float, float] = (0.0, 1.0)  # regression: the targets' (mean, std)


def _prepare_data(settings: dict) -> _Data:
    """Read the data, then split it as `_split_data` does."""
    train, test, name = _load_data(settings)
    return _split_data(settings, train, test, name)


def _split_data(settings: dict, train: Split, test: Split | None, name: str,
                regression: bool = False) -> _Data:
    """Hold out a stratified validation split (regression: a random one) and take the
    channel statistics of the rest, from the seed; print a summary. Regression targets
    are standardized by the statistics of the part trained on."""
    import numpy as np

    from .. import data as D

    split_seed, shuffle_seed = np.random.SeedSequence(settings["seed"]).spawn(2)
    if regression:
        classes, y_all = None, np.asarray(train.labels, np.float64)
        strata = np.zeros(len(y_all), np.int64)
    else:
        classes = _class_names(train)
        y_all = strata = D.encode_labels(train.labels, classes, train.source)
    keep, held = D.stratified_split(strata, settings["val_fraction"],
                                    np.random.default_rng(split_seed))
    fit, val = train.subset(keep), train.subset(held)
    if test is None:
        y_test = None
    elif regression:
        y_test = np.asarray(test.labels, np.float64)
    else:
        y_test = D.encode_labels(test.labels, classes, test.source)
    target = (0.0, 1.0)
    if regression:
        target = (float(y_all[keep].mean()), float(y_all[keep].std()) or 1.0)
        y_all = (y_all - target[0]) / target[1]
        y_test = None if y_test is None else (y_test - target[0]) / target[1]
    mean, std = D.channel_stats(fit.series)
    lengths = [s.shape[0] for s in train.series]
    print(f"{name}: {len(fit)} train / {len(val)} validation / "
          f"{len(test) if test is not None else 0} test series, {train.num_channels} "
          f"channel{'' if train.num_channels == 1 else 's'}, "
          f"{'regression' if regression else f'{len(classes)} classes'}, "
          f"lengths {min(lengths)}-{max(lengths)}")
    return _Data(name, classes, train.num_channels, fit, val, test, y_all[keep], y_all[held],
                 y_test, mean, std, shuffle_seed, target)


def _load_data(settings: dict):
    """``(train, test or None, description)`` Splits, labelled as training needs."""
    from .. import data as D

    if settings["data"] is not None:
        path = Path(settings["data"])
        train = D.read_ts(path)
        test_path = settings["test"]
        if test_path is None and path.name.upper().endswith("_TRAIN.TS"):
            sibling = path.with_name(path.name[: -len("_TRAIN.ts")] + "_TEST" + path.suffix)
            test_path = sibling if sibling.exists() else None
        test = D.read_ts(test_path) if test_path is not None else None
        name = path.name
    else:
        train, test = D.load_dataset(settings["dataset"])
        name = settings["dataset"]
    if train.labels is None:
        raise ValueError(f"{train.source} has no class labels (its header needs "
                         "'@classLabel true <names>' and each series a ':<label>' at the end); "
                         "rnnkit train needs labelled series")
    if test is not None and test.num_channels != train.num_channels:
        raise ValueError(f"the test set {test.source} has {test.num_channels} channels, the "
                         f"training set {train.num_channels}")
    if test is not None and test.labels is None:
        print(f"note: {test.source} has no labels; no test accuracy", file=sys.stderr)
        test = None
    return train, test, name


def _class_names(train) -> list[str]:
    """The declared order (``@classLabel``) when it covers every label, else sorted."""
    present = {str(v) for v in train.labels}
    if train.classes and present <= set(train.classes):
        return list(train.classes)
    return sorted(present)


# ---------------------------------------------------------------- model step


@dataclass
class _Training:
    """What the epochs change; all of it goes into the checkpoint."""

    model: SequenceClassifier
    optimizer: Optimizer
    shuffle_rng: np.random.Generator  # batch order and input noise
    history: list[dict]  # one record per epoch done
    best: dict | None  # {"epoch", "key"} of the best epoch so far
    best_state: dict | None  # its weights
    start_epoch: int  # epochs done before this process started
    elapsed_before: float  # seconds spent by the processes before this one
    started: float  # time.perf_counter() when this one started

    def elapsed(self) -> float:
        """Seconds spent on the run so far, by every process."""
        return self.elapsed_before + time.perf_counter() - self.started


def _start_training(settings: dict, data: _Data, meta: dict | None, arrays: dict | None,
                    out: Path | None, started: float) -> _Training:
    """The model and its optimizer, initialized from the seed; when resuming, overwritten
    (with the rngs, history and best epoch) from the checkpoint. Prints the model."""
    import numpy as np

    import rnnkit
    from rnnkit.models import SequenceClassifier, SequenceRegressor

    rnnkit.manual_seed(settings["seed"])
    shape = {key: settings[key] for key in ("model", "hidden_size", "num_layers",
                                            "bidirectional", "dropout", "dtype")}
    # (runs checkpointed before these settings existed used their defaults)
    shape.update(patch=_patch(settings.get("patch", 1), data), pool=settings.get("pool", "last"))
    shape.update({key: settings.get(key, DEFAULTS[key]) for key in _CELL_OPTIONS})
    if data.classes is None:
        model = SequenceRegressor(data.num_channels, **shape, mean=data.mean.tolist(),
                                  std=data.std.tolist(), target_mean=data.target[0],
                                  target_std=data.target[1])
    else:
        model = SequenceClassifier(data.num_channels, len(data.classes), **shape,
                                   classes=data.classes, mean=data.mean.tolist(),
                                   std=data.std.tolist())
    job = _Training(model, _make_optimizer(settings, model.parameters()),
                    np.random.default_rng(data.shuffle_seed), history=[], best=None,
                    best_state=None, start_epoch=0, elapsed_before=0.0, started=started)
    if meta is not None:
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{out / CHECKPOINT} is not a checkpoint written by rnnkit train")
        model.load_state_dict({k[len("model/"):]: v for k, v in arrays.items()
                               if k.startswith("model/")})
        job.best_state = {k[len("best/"):]: v for k, v in arrays.items()
                          if k.startswith("best/")}
        job.optimizer.load_state_dict(_from_json_tree(meta["optimizer_state"], arrays))
        rnnkit.default_generator().bit_generator.state = meta["rnnkit_rng"]
        job.shuffle_rng.bit_generator.state = meta["shuffle_rng"]
        job.history, job.best = meta["history"], meta["best"]
        job.elapsed_before, job.start_epoch = meta["elapsed_seconds"], meta["epoch"]
        print(f"resuming {out} after epoch {job.start_epoch}")
    n_params = sum(p.size for p in model.parameters())
    print(f"{model.rnn!r} -> Linear({model.fc.in_features}, {model.fc.out_features}): "
          f"{n_params:,} parameters" + ("" if out is None else f"; saving to {out}"))
    return job


def _patch(patch: int | None, data: _Data) -> int:
    """``--patch``, or when None the smallest that reads the longest training series in
    at most ``_MAX_STEPS`` recurrent steps."""
    if patch is not None:
        return patch
    longest = max(len(s) for s in data.fit.series + data.val.series)
    return max(1, -(-longest // _MAX_STEPS))


def _base_lr(settings: dict) -> float:
    return settings["lr"] if settings["lr"] is not None else _LR[settings["optimizer"]]


def _make_optimizer(settings: dict, parameters):
    from rnnkit import optim

    name = settings["optimizer"]
    lr = _base_lr(settings)
    extra = {} if settings["weight_decay"] is None else {"weight_decay": settings["weight_decay"]}
    if name == "adam":
        return optim.Adam(parameters, lr=lr, **extra)
    if name == "adamw":
        return optim.AdamW(parameters, lr=lr, **extra)
    return optim.SGD(parameters, lr=lr, momentum=0.9, **extra)


# ---------------------------------------------------------------- epoch step


def _train_epoch(job: _Training, data: _Data, settings: dict, epoch: int) -> None:
    """One epoch: a pass over the training part, then the validation score; keeps the
    weights if they are the best so far and prints the epoch's line."""
    t0 = time.perf_counter()
    record = {"epoch": epoch, **_training_pass(job, data, settings, epoch)}
    if len(data.val) and data.classes is None:
        record["val_loss"] = _squared_error(job.model, data.val.series, data.y_val)
    elif len(data.val):
        record["val_loss"], record["val_accuracy"], _ = _score(job.model, data.val.series,
                                                               data.y_val)
    record["seconds"] = time.perf_counter() - t0
    job.history.append(record)
    # best: highest validation accuracy, then lowest validation loss (no
    # validation set: the last epoch)
    key = (record.get("val_accuracy", 0.0), -record.get("val_loss", -epoch))
    improved = job.best is None or key > tuple(job.best["key"])
    if improved:
        job.best = {"epoch": epoch, "key": list(key)}
        job.best_state = job.model.state_dict()
    epochs = settings["epochs"]
    line = f"epoch {epoch:>{len(str(epochs))}}/{epochs}  train loss {record['train_loss']:.4f}"
    if "train_accuracy" in record:
        line += f" acc {_pct(record['train_accuracy'])}"
    if len(data.val):
        line += f"  val loss {record['val_loss']:.4f}"
    if "val_accuracy" in record:
        line += f" acc {_pct(record['val_accuracy'])}"
    print(f"{line}  {record['seconds']:.1f}s{'  *' if improved else ''}", flush=True)


def _training_pass(job: _Training, data: _Data, settings: dict, epoch: int) -> dict:
    """The gradient steps of ``epoch`` over ``data.fit``: batches in the seeded order,
    noise on the inputs, gradients clipped, the epoch's learning rate. Returns the
    ``train_loss`` and ``train_accuracy`` of the batches as they were trained on."""
    import numpy as np

    import rnnkit
    from rnnkit.nn.utils.clip_grad import clip_grad_norm_

    from .. import data as D
    from .. import distributed as dist

    model, optimizer, rng = job.model, job.optimizer, job.shuffle_rng
    epochs, batch_size = settings["epochs"], settings["batch_size"]
    base_lr = _base_lr(settings)  # not the optimizer's: a resumed one holds a decayed lr
    for group in optimizer.param_groups:  # a function of the epoch alone: resumable
        group["lr"] = base_lr * settings["lr_decay"] ** (epoch - 1)
    regression = data.classes is None
    value_and_grad = rnnkit.value_and_grad(_squared_error_loss if regression else _loss)
    n_batches = -(-len(data.fit) // batch_size)
    model.train()
    total_loss, correct, seen_n = 0.0, 0, 0
    with _progress(n_batches, f"epoch {epoch:>{len(str(epochs))}}/{epochs}") as bar:
        for batch in D.batch_indices(len(data.fit), batch_size, rng):
            mine = dist._my_rows(len(batch))  # under mpirun, this rank's rows; alone, all
            idx = batch[mine]
            if settings["noise"] > 0:  # in standardized units, from the checkpointed rng;
                # drawn for the whole batch on every rank: each row gets one process's noise
                shape = (len(batch), max(len(data.fit.series[i]) for i in batch),
                         data.num_channels)
                eps = rng.standard_normal(shape)[mine] * settings["noise"]
            y, seen, loss, hits = data.y_fit[idx], [], 0.0, 0
            if len(idx):
                x, lens = D.pad_batch([data.fit.series[i] for i in idx], model.dtype)
                if settings["noise"] > 0:
                    x += (eps[:, : x.shape[1]] * data.std).astype(x.dtype)
                loss, grads = value_and_grad(model, x, lens, y, seen)
                hits = 0 if regression else int((seen[0].argmax(axis=1) == y).sum())
            else:  # a last batch smaller than the world left this rank no rows
                grads = {k: np.zeros(p.shape, p.dtype) for k, p in model.named_parameters()}
            # alone: as they are; under mpirun: the whole batch's, one message per step
            grads, sums = dist._batch_gradient(grads, len(idx), len(batch),
                                               loss=float(loss) * len(idx), correct=hits)
            if settings["clip"] > 0:
                clip_grad_norm_(grads, settings["clip"])
            optimizer.step(grads)
            optimizer.zero_grad()
            total_loss += sums["loss"]
            correct += int(sums["correct"])
            seen_n += len(batch)
            bar.update(1)
            bar.set_postfix(loss=f"{total_loss / seen_n:.4f}", acc=_pct(correct / seen_n))
    if not np.isfinite(total_loss):
        raise ValueError(f"the training loss became {total_loss} at epoch {epoch}; lower "
                         "--lr or set --clip")
    if regression:
        return {"train_loss": total_loss / seen_n}
    return {"train_loss": total_loss / seen_n, "train_accuracy": correct / seen_n}


def _loss(model, x, lengths, y, seen: list):
    """The training loss of a batch; its logits go to ``seen``, for the accuracy."""
    from autograd.tracer import getval

    from rnnkit import nn

    logits = model(x, lengths)
    seen.append(getval(logits))
    return nn.functional.cross_entropy(logits, y)


def _squared_error_loss(model, x, lengths, y, seen: list):
    """The regression loss of a batch: the mean squared error in standardized units."""
    from rnnkit import nn

    return nn.functional.mse_loss(model(x, lengths), y.astype(model.dtype))


def _progress(total: int, desc: str):
    """A tqdm bar on a terminal's stderr; elsewhere, nothing."""
    from tqdm import tqdm

    from .. import distributed as dist

    return tqdm(total=total, desc=desc, unit="batch", leave=False, file=sys.stderr,
                disable=not sys.stderr.isatty() or not dist._is_root(), dynamic_ncols=True)


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


# ---------------------------------------------------------------- evaluation step


def _score(model, series, y) -> tuple[float, float, np.ndarray]:
    """``(loss, accuracy, predictions)`` of ``model`` on raw series: the eval-mode logits
    that ``predict_proba`` turns into probabilities, the loss taken from them in float64."""
    import numpy as np

    from rnnkit.nn.functional import cross_entropy

    from .. import distributed as dist

    # (N, num_classes), the model's dtype; under mpirun each rank computes a block of rows
    logits = dist._map_rows(model._logits, series)
    pred = logits.argmax(axis=1)
    loss = cross_entropy(logits.astype(np.float64), y)
    return float(loss), float((pred == y).mean()), pred


def _squared_error(model, series, y) -> float:
    """The mean squared error of a regressor on raw series, in standardized units."""
    import numpy as np

    return float(np.mean((model._logits(series).astype(np.float64) - y) ** 2))


def _evaluate_best(job: _Training, data: _Data) -> tuple[dict, tuple]:
    """Back to the best epoch's weights; their test score (``metrics.json``'s fields),
    and ``(set name, truth, predictions)`` for the confusion matrix: the test set's,
    or validation's when there is no test set."""
    import numpy as np

    model = job.model
    model.load_state_dict(job.best_state)
    result = {"best_epoch": job.best["epoch"]}
    if data.test is not None:
        test_loss, test_acc, test_pred = _score(model, data.test.series, data.y_test)
        result.update(test_loss=test_loss, test_accuracy=test_acc, test_size=len(data.test),
                      test_correct=int((test_pred == data.y_test).sum()))
        return result, ("test", data.y_test, test_pred)
    result.update(test_loss=None, test_accuracy=None, test_size=0)
    pred = _score(model, data.val.series, data.y_val)[2] if len(data.val) else \
        np.zeros(0, np.int64)
    return result, ("validation", data.y_val, pred)


# ---------------------------------------------------------------- outputs step


def _write_outputs(out: Path, settings: dict, data: _Data, job: _Training, result: dict,
                   confusion: tuple) -> None:
    """model.safetensors, metrics.json and the two plots; then the run's summary lines."""
    import rnnkit

    wall = job.elapsed()
    best = job.best["epoch"]
    rnnkit.save(job.model, out / "model.safetensors")  # with its config: classes, statistics
    _write_json(out / "metrics.json", _metrics(settings, data, job.history, result, wall))
    _plot_curves(job.history, best, out / "curves.png",
                 title=f"{data.name}: {job.model.model.upper()}, best epoch {best}")
    confusion_of, truth, pred = confusion
    _plot_confusion(truth, pred, data.classes, out / "confusion.png",
                    title=f"{data.name}: {confusion_of} set")
    b = job.history[best - 1]
    print(f"best epoch {best}" + (f" (val acc {_pct(b['val_accuracy'])}, loss "
                                  f"{b['val_loss']:.4f})" if len(data.val) else ""))
    if data.test is not None:
        print(f"test accuracy {_pct(result['test_accuracy'])} "
              f"({result['test_correct']}/{len(data.test)})")
    print(f"wall time {wall:.1f} s")
    print(f"saved {out / 'model.safetensors'}, metrics.json, curves.png, confusion.png in {out}")


def _metrics(settings: dict, data: _Data, history: list[dict], result: dict,
             wall: float) -> dict:
    import platform

    import numpy as np

    import rnnkit

    versions = {"rnnkit": rnnkit.__version__, "numpy": np.__version__,
                "python": platform.python_version()}
    try:
        from importlib.metadata import version

        versions["aeon"] = version("aeon")
    except Exception:  # noqa: BLE001 - a version is a nicety
        pass
    return {
        "data": data.name,
        "classes": data.classes,
        "sizes": {"train": len(data.fit), "validation": len(data.val),
                  "test": 0 if data.test is None else len(data.test)},
        "settings": settings,
        "epochs": history,
        **result,
        "wall_time_seconds": wall,
        "versions": versions,
    }


# ---------------------------------------------------------------- plots


def _save_figure(fig, path: Path) -> None:
    """Render with Agg (no pyplot, no display, no global backend switch), atomically."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    write_atomically(path, buffer.getvalue())


def _plot_curves(history: list[dict], best_epoch: int, path: Path, title: str) -> None:
    from matplotlib.figure import Figure

    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(10, 4), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    for ax, key, label in ((loss_ax, "loss", "cross-entropy loss"),
                           (acc_ax, "accuracy", "accuracy")):
        ax.plot(epochs, [r[f"train_{key}"] for r in history], marker=".", label="train")
        if "val_" + key in history[0]:
            ax.plot(epochs, [r[f"val_{key}"] for r in history], marker=".", label="validation")
        ax.axvline(best_epoch, color="gray", linestyle=":", label=f"best (epoch {best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    loss_ax.set_yscale("log")
    fig.suptitle(title)
    _save_figure(fig, path)


def _plot_confusion(truth, pred, classes: list[str], path: Path, title: str) -> None:
    import numpy as np
    from matplotlib.figure import Figure

    K = len(classes)
    counts = np.zeros((K, K), dtype=np.int64)  # rows: true class, columns: predicted
    np.add.at(counts, (np.asarray(truth, np.int64), np.asarray(pred, np.int64)), 1)
    size = min(4 + 0.45 * K, 16)
    fig = Figure(figsize=(size + 1, size), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, shrink=0.8, label="series")
    if K <= 30:
        ticks = np.arange(K)
        ax.set_xticks(ticks, classes, rotation=45 if max(map(len, classes)) > 3 else 0)
        ax.set_yticks(ticks, classes)
        threshold = counts.max() / 2 if counts.size else 0
        for i in range(K):
            for j in range(K):
                if counts[i, j]:
                    ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if counts[i, j] > threshold else "black")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{title}: accuracy {100 * accuracy:.2f}% ({np.trace(counts)}/{counts.sum()})")
    _save_figure(fig, path)
