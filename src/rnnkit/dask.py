"""Batch inference on a Dask cluster: the series are split into blocks, one task per
block, spread over the cluster's workers; each worker process loads the model once
(from the saved file's bytes, sent to each worker once, never a pickled module) and
the blocks come back in input order.

The blocks are whole batches of ``SequenceClassifier.predict_proba`` (256 series), so
every series is computed in the very batch it would be in one process: the result
equals ``model.predict_proba(series)`` exactly, not merely closely.

Needs ``pip install 'rnnkit[dask]'`` here and rnnkit on every worker.

Example::

    from rnnkit import dask as rdask
    proba = rdask.predict_proba("runs/x/model.safetensors", series)            # a local cluster
    names = rdask.predict("runs/x/model.safetensors", series, "tcp://host:8786")  # a scheduler's
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["predict", "predict_proba", "connect"]

TIMEOUT = 10.0  # seconds to reach a scheduler before giving up
_BLOCKS_PER_WORKER = 4  # tasks per worker: balance against a slow worker, little overhead

# per worker process: the models loaded so far, by their file's SHA-256
_models: dict[str, object] = {}


def predict_proba(model, data, client=None, *, batch_size: int = 256,
                  timeout: float = TIMEOUT) -> np.ndarray:
    """Class probabilities ``(N, num_classes)`` of every series, computed on a Dask
    cluster; exactly ``SequenceClassifier.predict_proba(series, batch_size)``, in order.

    Args:
        model: a model saved by ``rnnkit train`` (its ``model.safetensors``, or the run
            folder), or a ``SequenceClassifier`` (saved to bytes first; workers rebuild it).
        data: a sequence of raw ``(L_i, C)`` series, or a ``.ts`` file's path.
        client: a ``distributed.Client``; a scheduler's address (``"tcp://host:8786"``);
            ``"local"`` for a ``LocalCluster`` of worker processes on this machine,
            closed afterwards; or None for the current Dask client if there is one,
            else ``"local"``.
        batch_size: series per forward pass, as ``predict_proba``'s.
        timeout: seconds to reach a scheduler given by address. Default: 10

    Raises:
        ConnectionError: the scheduler at ``client`` cannot be reached within ``timeout``.
    """
    blob = _model_bytes(model)
    series = _series(data)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    with _client(client, timeout) as c:
        workers = max(len(c.scheduler_info(n_workers=-1)["workers"]), 1)
        blocks = _blocks(len(series), batch_size, workers)
        if not blocks:  # no series: the model still says how many classes
            return _load(blob).predict_proba([], batch_size)
        key = hashlib.sha256(blob).hexdigest()
        shared = c.scatter(blob, broadcast=True, hash=False)  # once to each worker
        parts = c.scatter([series[a:b] for a, b in blocks], hash=False)
        # (map's own key= and batch_size= are Dask's: ours go by other names)
        futures = c.map(_predict_block, parts, model_key=key, model_blob=shared,
                        rows_per_pass=batch_size, pure=False)
        return np.concatenate(c.gather(futures))


def predict(model, data, client=None, *, batch_size: int = 256,
            timeout: float = TIMEOUT) -> list[str]:
    """Class names of every series, computed on a Dask cluster; exactly
    ``SequenceClassifier.predict(series)``, in order. Arguments as :func:`predict_proba`."""
    proba = predict_proba(model, data, client, batch_size=batch_size, timeout=timeout)
    classes = _load(_model_bytes(model)).classes if not hasattr(model, "classes") \
        else model.classes
    return [classes[k] for k in proba.argmax(axis=1)]


@contextlib.contextmanager
def connect(address: str = "local", timeout: float = TIMEOUT, n_workers: int | None = None):
    """A ``distributed.Client`` for ``address`` (``"local"``: a ``LocalCluster`` of
    ``n_workers`` worker processes, default one per core, each running one task at a
    time), closed (the cluster too) on leaving.

    Raises:
        ConnectionError: no scheduler answers at ``address`` within ``timeout`` seconds.
    """
    _require_distributed()
    from distributed import Client, LocalCluster

    if address == "local":
        import dask

        # before the worker processes start (so before their BLAS loads)
        with dask.config.set({"distributed.nanny.pre-spawn-environ": _blas_env()}):
            cluster = LocalCluster(n_workers=n_workers or os.cpu_count() or 1,
                                   threads_per_worker=1,
                                   processes=True, dashboard_address=None)
        try:
            with Client(cluster) as client:
                yield client
        finally:
            cluster.close()
        return
    try:
        client = Client(address, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConnectionError(
            f"cannot reach a Dask scheduler at {address} within {timeout:g} s ({reason}); "
            "start one there with 'dask scheduler' and workers with 'dask worker "
            f"{address}', or use --dask local") from None
    with client:
        yield client


# ---------------------------------------------------------------- this side


def _blas_env() -> dict[str, str]:
    """The BLAS thread count of this process, for the workers of a local cluster. Dask
    starts workers with one BLAS thread; but OpenBLAS's float sums can depend on its
    thread count, and the workers must compute what this process would, bit for bit."""
    threads = next((os.environ[v] for v in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS",
                                             "OMP_NUM_THREADS") if os.environ.get(v)),
                   str(os.cpu_count() or 1))
    import dask

    return {**dask.config.get("distributed.nanny.pre-spawn-environ", {}),
            "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads}


@contextlib.contextmanager
def _client(client, timeout: float):
    if client is None:
        _require_distributed()
        from distributed import default_client

        try:
            client = default_client()
        except ValueError:  # no client in this process: a local cluster of our own
            client = "local"
    if isinstance(client, str):
        with connect(client, timeout) as c:
            yield c
    else:
        yield client


def _require_distributed() -> None:
    try:
        import distributed  # noqa: F401
    except ImportError:
        from .data import MissingExtraError

        raise MissingExtraError("Dask inference needs dask.distributed, which is not "
                                "installed: pip install 'rnnkit[dask]'") from None


def _model_bytes(model) -> bytes:
    """The safetensors file that rebuilds ``model``, as bytes."""
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if path.is_dir():
            path = path / "model.safetensors"
        if not path.exists():
            raise FileNotFoundError(f"model file not found: {path}")
        return path.read_bytes()
    from .models import SequenceClassifier

    if not isinstance(model, SequenceClassifier):
        raise TypeError("model must be a SequenceClassifier or the path of one saved by "
                        f"rnnkit train, got {type(model).__name__}")
    import rnnkit

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.safetensors"
        rnnkit.save(model, path)
        return path.read_bytes()


def _series(data) -> Sequence[np.ndarray]:
    if isinstance(data, (str, os.PathLike)):
        from .data import read_ts

        return read_ts(data).series
    return list(data)


def _blocks(n: int, batch_size: int, workers: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of each task's series: whole batches (so each series meets the
    same batch as in one process), about ``_BLOCKS_PER_WORKER`` blocks per worker.

    Example:
        >>> _blocks(1000, 256, 1)
        [(0, 256), (256, 512), (512, 768), (768, 1000)]
    """
    batches = -(-n // batch_size)
    per_block = max(1, -(-batches // (workers * _BLOCKS_PER_WORKER))) * batch_size
    return [(a, min(a + per_block, n)) for a in range(0, n, per_block)]


# ---------------------------------------------------------------- on a worker


def _load(blob: bytes):
    """The model the safetensors bytes ``blob`` hold (through a file: rnnkit.load_module
    reads files)."""
    import rnnkit

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.safetensors"
        path.write_bytes(blob)
        return rnnkit.load_module(path)


def _predict_block(series, model_key: str, model_blob: bytes, rows_per_pass: int
                   ) -> np.ndarray:
    """A task: the probabilities of one block, with this worker's copy of the model
    (loaded by the first task that needs it)."""
    model = _models.get(model_key)
    if model is None:
        model = _models[model_key] = _load(model_blob)
    return model.predict_proba(series, rows_per_pass)
