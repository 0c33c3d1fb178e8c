"""Train a recurrent sequence classifier on a bundled or given data set.

With no arguments: a 2-layer bidirectional LSTM (hidden size 64, dropout 0.3,
input noise 0.3, Adam lr 5e-3 decayed 0.95 per epoch, 60 epochs) on JapaneseVowels
(aeon's copy, read offline): about 98% test accuracy in under a minute on 2 cores.

Each epoch holds out a stratified validation split of the training set; the
weights of the best validation epoch are kept. Outputs in --out:

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
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from ._argtypes import fraction as _fraction
from ._argtypes import nonnegative_float as _nonnegative_float
from ._argtypes import nonnegative_int as _seed
from ._argtypes import positive_int as _positive_int

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
    "val_fraction": 0.1,
    "seed": 0,
    "dtype": "float32",
}
_LR = {"adam": 5e-3, "adamw": 5e-3, "sgd": 0.05}
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
                      help="part of each class held out for validation "
                           f"(default {d['val_fraction']})")

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


def _atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over it: a reader
    (or a crash) sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_json(path: Path, obj) -> None:
    _atomic_write(path, (json.dumps(obj, indent=2) + "\n").encode())


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


def _save_checkpoint(path: Path, model, best_state, optimizer, state: dict) -> None:
    import numpy as np
    import safetensors.numpy

    import rnnkit

    arrays = {}
    for name, p in model.state_dict().items():
        arrays[f"model/{name}"] = np.array(p, order="C")
    for name, p in (best_state or {}).items():
        arrays[f"best/{name}"] = np.array(p, order="C")
    meta = dict(state)
    meta["format"] = _FORMAT
    meta["optimizer_state"] = _to_json_tree(optimizer.state_dict(), arrays, "optim")
    meta["rnnkit_rng"] = rnnkit.default_generator().bit_generator.state
    data = safetensors.numpy.save(arrays, metadata={_FORMAT: json.dumps(meta)})
    _atomic_write(path, data)


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
        out = Path(args.out) if args.out is not None else _default_out()
        return settings, None, None, out
    out = Path(args.resume)
    if args.out is not None and Path(args.out).resolve() != out.resolve():
        raise ValueError("--resume DIR writes to DIR; leave out --out")
    if not out.is_dir():
        raise FileNotFoundError(f"no run to resume: {out} is not a folder")
    meta, arrays = _load_checkpoint(out / CHECKPOINT)
    settings = dict(meta["settings"])
    for key, value in given.items():
        if key in ("data", "test") and value is not None:
            value = str(Path(value).resolve())
        if key not in _RESUMABLE and value != settings.get(key):
            flag = "--" + key.replace("_", "-")
            raise ValueError(f"{flag} {value} differs from the run being resumed "
                             f"({settings.get(key)}); resume with the same settings "
                             "(only --epochs may change)")
        settings[key] = value
    return settings, meta, arrays, out


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


# ---------------------------------------------------------------- data


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


# ---------------------------------------------------------------- training


def _cross_entropy_np(logits, y):
    """Mean cross-entropy of plain arrays, in float64 (for reporting)."""
    import numpy as np

    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(y)), y].mean())


def _evaluate(model, series, y, batch_size: int = 256):
    """``(loss, accuracy, predictions)`` of the model in eval mode."""
    import numpy as np

    from .. import no_grad
    from ..data import pad_batch

    model.eval()
    logits = []
    with no_grad():
        for start in range(0, len(series), batch_size):
            x, lengths = pad_batch(series[start: start + batch_size], model.dtype)
            logits.append(np.asarray(model(x, lengths)))
    model.train()
    logits = np.concatenate(logits)
    pred = logits.argmax(axis=1)
    return _cross_entropy_np(logits, y), float((pred == y).mean()), pred


def _progress(total: int, desc: str):
    """A tqdm bar on a terminal's stderr; elsewhere, nothing."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=False, file=sys.stderr,
                disable=not sys.stderr.isatty(), dynamic_ncols=True)


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def run(args: argparse.Namespace) -> int:
    from .. import data as D

    D.require("aeon", "matplotlib", "tqdm")
    settings, meta, arrays, out = _resolve(args)
    _prepare_out(out, resuming=meta is not None)
    started = time.perf_counter()

    import numpy as np
    from autograd.tracer import getval

    import rnnkit
    from rnnkit import nn
    from rnnkit.models import SequenceClassifier
    from rnnkit.nn.utils.clip_grad import clip_grad_norm_

    # ---- data: the same split and statistics on every (re)start, from the seed
    train, test, name = _load_data(settings)
    classes = _class_names(train)
    y_all = D.encode_labels(train.labels, classes, train.source)
    split_seed, shuffle_seed = np.random.SeedSequence(settings["seed"]).spawn(2)
    keep, held = D.stratified_split(y_all, settings["val_fraction"],
                                    np.random.default_rng(split_seed))
    fit, val = train.subset(keep), train.subset(held)
    y_fit, y_val = y_all[keep], y_all[held]
    y_test = D.encode_labels(test.labels, classes, test.source) if test is not None else None
    mean, std = D.channel_stats(fit.series)
    lengths = [s.shape[0] for s in train.series]
    print(f"{name}: {len(fit)} train / {len(val)} validation / "
          f"{len(test) if test is not None else 0} test series, {train.num_channels} "
          f"channel{'' if train.num_channels == 1 else 's'}, "
          f"{len(classes)} classes, lengths {min(lengths)}-{max(lengths)}")

    # ---- model and optimizer: init from the seed; a resumed run then overwrites both
    rnnkit.manual_seed(settings["seed"])
    model = SequenceClassifier(
        train.num_channels, len(classes), model=settings["model"],
        hidden_size=settings["hidden_size"], num_layers=settings["num_layers"],
        bidirectional=settings["bidirectional"], dropout=settings["dropout"],
        dtype=settings["dtype"], classes=classes, mean=mean.tolist(), std=std.tolist(),
    )
    optimizer = _make_optimizer(settings, model.parameters())
    shuffle_rng = np.random.default_rng(shuffle_seed)
    history, best, best_state, elapsed_before, start_epoch = [], None, None, 0.0, 0
    if meta is not None:
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{out / CHECKPOINT} is not a checkpoint written by rnnkit train")
        model.load_state_dict({k[len("model/"):]: v for k, v in arrays.items()
                               if k.startswith("model/")})
        best_state = {k[len("best/"):]: v for k, v in arrays.items() if k.startswith("best/")}
        optimizer.load_state_dict(_from_json_tree(meta["optimizer_state"], arrays))
        rnnkit.default_generator().bit_generator.state = meta["rnnkit_rng"]
        shuffle_rng.bit_generator.state = meta["shuffle_rng"]
        history, best = meta["history"], meta["best"]
        elapsed_before, start_epoch = meta["elapsed_seconds"], meta["epoch"]
        print(f"resuming {out} after epoch {start_epoch}")
    n_params = sum(p.size for p in model.parameters())
    print(f"{model.rnn!r} -> Linear({model.fc.in_features}, {len(classes)}): "
          f"{n_params:,} parameters; saving to {out}")

    def loss_fn(model, x, lengths, y, seen):
        logits = model(x, lengths)
        seen.append(getval(logits))
        return nn.functional.cross_entropy(logits, y)

    value_and_grad = rnnkit.value_and_grad(loss_fn)
    epochs, batch_size = settings["epochs"], settings["batch_size"]
    n_batches = -(-len(fit) // batch_size)
    width = len(str(epochs))

    base_lr = _base_lr(settings)  # not the optimizer's: a resumed one holds a decayed lr
    for epoch in range(start_epoch + 1, epochs + 1):
        t0 = time.perf_counter()
        for group in optimizer.param_groups:  # a function of the epoch alone: resumable
            group["lr"] = base_lr * settings["lr_decay"] ** (epoch - 1)
        model.train()
        total_loss, correct, seen_n = 0.0, 0, 0
        with _progress(n_batches, f"epoch {epoch:>{width}}/{epochs}") as bar:
            for idx in D.batch_indices(len(fit), batch_size, shuffle_rng):
                x, lens = D.pad_batch([fit.series[i] for i in idx], model.dtype)
                if settings["noise"] > 0:  # in standardized units, from the checkpointed rng
                    eps = shuffle_rng.standard_normal(x.shape) * settings["noise"]
                    x += (eps * std).astype(x.dtype)
                y, seen = y_fit[idx], []
                loss, grads = value_and_grad(model, x, lens, y, seen)
                if settings["clip"] > 0:
                    clip_grad_norm_(grads, settings["clip"])
                optimizer.step(grads)
                optimizer.zero_grad()
                total_loss += float(loss) * len(idx)
                correct += int((seen[0].argmax(axis=1) == y).sum())
                seen_n += len(idx)
                bar.update(1)
                bar.set_postfix(loss=f"{total_loss / seen_n:.4f}", acc=_pct(correct / seen_n))
        if not np.isfinite(total_loss):
            raise ValueError(f"the training loss became {total_loss} at epoch {epoch}; lower "
                             "--lr or set --clip")
        record = {"epoch": epoch, "train_loss": total_loss / seen_n,
                  "train_accuracy": correct / seen_n}
        if len(val):
            record["val_loss"], record["val_accuracy"], _ = _evaluate(model, val.series, y_val)
        record["seconds"] = time.perf_counter() - t0
        history.append(record)
        # best: highest validation accuracy, then lowest validation loss (no
        # validation set: the last epoch)
        key = (record.get("val_accuracy", 0.0), -record.get("val_loss", -epoch))
        improved = best is None or key > tuple(best["key"])
        if improved:
            best = {"epoch": epoch, "key": list(key)}
            best_state = model.state_dict()
        line = (f"epoch {epoch:>{width}}/{epochs}  train loss {record['train_loss']:.4f} "
                f"acc {_pct(record['train_accuracy'])}")
        if len(val):
            line += (f"  val loss {record['val_loss']:.4f} "
                     f"acc {_pct(record['val_accuracy'])}")
        print(f"{line}  {record['seconds']:.1f}s{'  *' if improved else ''}", flush=True)
        state = {
            "settings": settings, "epoch": epoch, "history": history, "best": best,
            "shuffle_rng": shuffle_rng.bit_generator.state,
            "elapsed_seconds": elapsed_before + time.perf_counter() - started,
        }
        _save_checkpoint(out / CHECKPOINT, model, best_state, optimizer, state)
        if args.stop_after_epoch is not None and epoch >= args.stop_after_epoch:
            print(f"stopped after epoch {epoch} (--stop-after-epoch); "
                  f"continue with --resume {out}")
            return 0

    if start_epoch >= epochs:
        print(f"{out} had already trained {start_epoch} epochs; writing its outputs again "
              "(pass a larger --epochs to train longer)")
    # ---- the best weights, tested, saved, plotted
    model.load_state_dict(best_state)
    result = {"best_epoch": best["epoch"]}
    if test is not None:
        test_loss, test_acc, test_pred = _evaluate(model, test.series, y_test)
        result.update(test_loss=test_loss, test_accuracy=test_acc, test_size=len(test),
                      test_correct=int((test_pred == y_test).sum()))
        confusion_of, truth, pred = "test", y_test, test_pred
    else:
        result.update(test_loss=None, test_accuracy=None, test_size=0)
        confusion_of, truth = "validation", y_val
        pred = _evaluate(model, val.series, y_val)[2] if len(val) else np.zeros(0, np.int64)
    wall = elapsed_before + time.perf_counter() - started

    _save_model(model, out / "model.safetensors")
    metrics = _metrics(settings, name, classes, fit, val, test, history, result, wall)
    _write_json(out / "metrics.json", metrics)
    _plot_curves(history, best["epoch"], out / "curves.png",
                 title=f"{name}: {model.model.upper()}, best epoch {best['epoch']}")
    _plot_confusion(truth, pred, classes, out / "confusion.png",
                    title=f"{name}: {confusion_of} set")
    b = history[best["epoch"] - 1]
    print(f"best epoch {best['epoch']}" + (f" (val acc {_pct(b['val_accuracy'])}, loss "
                                             f"{b['val_loss']:.4f})" if len(val) else ""))
    if test is not None:
        print(f"test accuracy {_pct(result['test_accuracy'])} "
              f"({result['test_correct']}/{len(test)})")
    print(f"wall time {wall:.1f} s")
    print(f"saved {out / 'model.safetensors'}, metrics.json, curves.png, confusion.png in {out}")
    return 0


def _save_model(model, path: Path) -> None:
    import rnnkit

    rnnkit.save(model, path)  # atomic; the config (class names, statistics) in its metadata


def _metrics(settings, name, classes, fit, val, test, history, result, wall) -> dict:
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
        "data": name,
        "classes": classes,
        "sizes": {"train": len(fit), "validation": len(val),
                  "test": 0 if test is None else len(test)},
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
    _atomic_write(path, buffer.getvalue())


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
