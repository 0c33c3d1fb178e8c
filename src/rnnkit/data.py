"""Labelled time series for ``rnnkit train`` and ``rnnkit predict``.

Series come from the classification data sets bundled with aeon (read offline,
``--dataset JapaneseVowels``) or from a user's ``.ts`` file (``--data FILE.ts``,
the format of https://www.timeseriesclassification.com). Whatever their source,
a split is a list of ``(L_i, C)`` float64 arrays, one per series of its own length,
and their class names; batches are padded to the longest series and carry the
lengths, ready for ``pack_padded_sequence(x, lengths, batch_first=True,
enforce_sorted=False)``.

Reading needs aeon (``pip install 'rnnkit[data]'``); the rest is NumPy.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "Split",
    "MissingExtraError",
    "require",
    "bundled_datasets",
    "load_dataset",
    "read_ts",
    "encode_labels",
    "stratified_split",
    "channel_stats",
    "pad_batch",
    "batch_indices",
]

INSTALL_HINT = "pip install 'rnnkit[data]'"


class MissingExtraError(ImportError, ValueError):
    """A package of the ``data`` extra is missing.

    Also a ``ValueError``, so the command line reports it in one line and exits 2.
    """


def require(*modules: str, purpose: str = "rnnkit train") -> None:
    """Import ``modules`` or say in one line which are missing and how to install them."""
    import importlib

    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingExtraError(
            f"{purpose} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'}"
            f" not installed: {INSTALL_HINT}"
        )


@dataclass
class Split:
    """Series of varying length and, when the source has them, their class names.

    Attributes:
        series: one ``(L_i, C)`` float64 array per series.
        labels: ``(N,)`` array of class names (str), or None for unlabelled data.
        classes: class names in the order the source declares them (``@classLabel``),
            or empty when it declares none.
        source: where the series came from, for messages.
    """

    series: list[np.ndarray]
    labels: np.ndarray | None
    classes: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.series)

    @property
    def num_channels(self) -> int:
        return self.series[0].shape[1]

    def subset(self, indices: np.ndarray) -> Split:
        labels = None if self.labels is None else self.labels[indices]
        return Split([self.series[i] for i in indices], labels, self.classes, self.source)


# ---------------------------------------------------------------- reading


def _aeon_data_dir() -> Path:
    require("aeon")
    import aeon.datasets

    return Path(aeon.datasets.__file__).parent / "data"


def _header(path: Path) -> dict[str, str]:
    """The ``@key value`` lines before ``@data``, lower-cased keys."""
    header = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if line.lower().startswith("@data"):
                break
            if line.startswith("@"):
                key, _, value = line[1:].partition(" ")
                header[key.lower()] = value.strip()
    return header


def bundled_datasets() -> list[str]:
    """Names of the classification data sets bundled with aeon (readable offline).

    Example:
        >>> "JapaneseVowels" in bundled_datasets()
        True
    """
    root = _aeon_data_dir()
    names = []
    for folder in sorted(root.iterdir(), key=lambda p: p.name.lower()):
        train, test = folder / f"{folder.name}_TRAIN.ts", folder / f"{folder.name}_TEST.ts"
        if train.is_file() and test.is_file():
            if _header(train).get("classlabel", "").lower().startswith("true"):
                names.append(folder.name)
    return names


def load_dataset(name: str) -> tuple[Split, Split]:
    """The train and test splits of a classification data set bundled with aeon.

    The name is matched without regard to case; nothing is downloaded.

    Raises:
        ValueError: ``name`` is not bundled (the message lists those that are).
    """
    known = bundled_datasets()
    by_lower = {n.lower(): n for n in known}
    if name.lower() not in by_lower:
        raise ValueError(
            f"unknown data set {name!r}; bundled with aeon (readable offline): "
            f"{', '.join(known)}; or pass --data FILE.ts"
        )
    name = by_lower[name.lower()]
    folder = _aeon_data_dir() / name
    return (read_ts(folder / f"{name}_TRAIN.ts", display=f"{name} (train)"),
            read_ts(folder / f"{name}_TEST.ts", display=f"{name} (test)"))


def read_ts(path: str | os.PathLike, display: str | None = None) -> Split:
    """Read a ``.ts`` file (sktime/aeon format, equal or unequal lengths).

    Raises:
        FileNotFoundError: no such file.
        PermissionError: the file cannot be read.
        ValueError: the file is not a readable ``.ts`` file, holds no series, or
            has missing values.
    """
    require("aeon")
    from aeon.datasets import load_from_ts_file

    path = Path(path)
    display = display or str(path)
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    if path.is_dir():
        raise ValueError(f"--data must be a .ts file, got the folder {path}")
    if not os.access(path, os.R_OK):
        raise PermissionError(f"cannot read data file {path}: permission denied")
    try:
        X, y, meta = load_from_ts_file(str(path), return_meta_data=True)
    except (OSError, ValueError, IndexError, KeyError, TypeError, UnicodeError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"cannot read {path} as a .ts file: {reason}") from None
    if len(X) == 0:
        raise ValueError(f"cannot read {path} as a .ts file: it holds no series "
                         "(expected @-header lines, then @data and one series per line)")
    # aeon gives (N, C, L) for equal lengths, else a list of (C, L_i)
    series = [np.ascontiguousarray(np.asarray(s, dtype=np.float64).T) for s in X]
    channels = {s.shape[1] for s in series}
    if len(channels) != 1:
        raise ValueError(f"{path}: series have different numbers of channels {sorted(channels)}")
    bad = [i for i, s in enumerate(series) if not np.isfinite(s).all()]
    if bad:
        raise ValueError(f"{path}: {len(bad)} series have missing or infinite values (first: "
                         f"series {bad[0]}); fill or drop them first")
    short = [i for i, s in enumerate(series) if s.shape[0] == 0]
    if short:
        raise ValueError(f"{path}: series {short[0]} is empty")
    has_labels = bool(meta.get("classlabel")) and len(y) == len(series)
    labels = np.asarray([str(v) for v in y]) if has_labels else None
    classes = [str(c) for c in meta.get("class_values") or []] if has_labels else []
    return Split(series, labels, classes, display)


# ---------------------------------------------------------------- preparing


def encode_labels(labels: np.ndarray, classes: Sequence[str], source: str = "labels"
                  ) -> np.ndarray:
    """Class names -> int64 indices into ``classes``.

    Example:
        >>> encode_labels(np.array(["b", "a", "b"]), ["a", "b"]).tolist()
        [1, 0, 1]
    """
    index = {c: k for k, c in enumerate(classes)}
    unknown = sorted({str(v) for v in labels} - set(index))
    if unknown:
        raise ValueError(f"{source} has classes {unknown[:5]} that the model does not know "
                         f"(it knows {list(classes)[:10]})")
    return np.array([index[str(v)] for v in labels], dtype=np.int64)


def stratified_split(labels: np.ndarray, fraction: float, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``fraction`` of each class (at least one series of every class
    with two or more). Returns sorted ``(keep, held_out)`` indices.

    Example:
        >>> keep, val = stratified_split(np.array([0, 0, 0, 0, 1, 1]), 0.5,
        ...                              np.random.default_rng(0))
        >>> len(keep), len(val), sorted(np.array([0, 0, 0, 0, 1, 1])[val].tolist())
        (3, 3, [0, 0, 1])
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"--val-fraction must be in [0, 1), got {fraction}")
    held = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        members = members[rng.permutation(len(members))]
        k = int(round(fraction * len(members)))
        if fraction > 0 and len(members) >= 2:
            k = min(max(k, 1), len(members) - 1)
        else:
            k = 0
        held.append(members[:k])
    held_out = np.sort(np.concatenate(held)) if held else np.array([], np.int64)
    keep = np.setdiff1d(np.arange(len(labels)), held_out)
    return keep.astype(np.int64), held_out.astype(np.int64)


def channel_stats(series: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each channel over every step of every series
    (a constant channel gets std 1, so standardizing leaves it at 0).

    Example:
        >>> mean, std = channel_stats([np.array([[0.0, 5.0], [2.0, 5.0]])])
        >>> mean.tolist(), std.tolist()
        ([1.0, 5.0], [1.0, 1.0])
    """
    steps = np.concatenate(list(series), axis=0)  # (sum L_i, C)
    mean = steps.mean(axis=0)
    std = steps.std(axis=0)
    std[~(std > 1e-12)] = 1.0
    return mean, std


def pad_batch(series: Sequence[np.ndarray], dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad series to the longest: ``x (N, L_max, C)`` and ``lengths (N,)``.

    Example:
        >>> x, lengths = pad_batch([np.ones((3, 2)), np.ones((1, 2))])
        >>> x.shape, lengths.tolist(), x[1, :, 0].tolist()
        ((2, 3, 2), [3, 1], [1.0, 0.0, 0.0])
    """
    lengths = np.array([s.shape[0] for s in series], dtype=np.int64)
    x = np.zeros((len(series), int(lengths.max()), series[0].shape[1]), dtype=dtype)
    for n, s in enumerate(series):
        x[n, : len(s)] = s
    return x, lengths


def batch_indices(n: int, batch_size: int, rng: np.random.Generator | None = None
                  ) -> Iterator[np.ndarray]:
    """Indices of successive batches of ``range(n)``, shuffled when ``rng`` is given
    (one ``rng.permutation(n)`` per call: an epoch draws exactly that).

    Example:
        >>> [b.tolist() for b in batch_indices(5, 2)]
        [[0, 1], [2, 3], [4]]
    """
    order = np.arange(n) if rng is None else rng.permutation(n)
    for start in range(0, n, batch_size):
        yield order[start: start + batch_size]
