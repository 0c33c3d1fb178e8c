"""Data-parallel training over MPI, as HPC codes and Horovod do it: K processes (ranks)
started by ``mpirun``, each taking its rows of every global batch; their gradients are
summed in one message per step, so every rank takes the same optimizer step.

A plain process, a process started by ``mpirun -n 1``, or any process where mpi4py is
not installed is a world of one: every function here then returns at once, and mpi4py
is not even imported (``pip install 'rnnkit[mpi]'`` brings mpi4py and an MPI).

Example: a training loop of your own, run as ``mpirun -n 4 python train.py``::

    import rnnkit
    from rnnkit import distributed as dist

    dist.init()
    dist.broadcast_parameters(model)                  # every rank starts from rank 0's
    for x, lengths, y in batches:                     # the same global batches everywhere
        mine = dist.shard(len(y))                     # this rank's rows of the batch
        loss, grads = rnnkit.value_and_grad(loss_fn)(model, x[mine], lengths[mine], y[mine])
        opt.step(dist.all_reduce(grads))              # the mean over ranks: one message
    if dist.get_rank() == 0:
        rnnkit.save(model, "model.safetensors")

(``all_reduce``'s mean is the global batch's gradient when every rank has as many rows;
``rnnkit train`` weights each rank's by its rows, so a ragged last batch is exact too.)
"""

from __future__ import annotations

import os
import sys
import time
import traceback
import warnings
from collections.abc import Mapping

import numpy as np

__all__ = ["init", "get_rank", "get_world_size", "all_reduce", "broadcast_parameters", "shard"]

# what launchers put in each process's environment: Open MPI, MPICH/Intel MPI (Hydra's
# PMI), MVAPICH, and any PMIx launcher (Slurm's srun --mpi=pmix, prterun)
_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")
_LAUNCH_VARIABLES = (*_SIZE_VARIABLES, "PMIX_RANK", "PMI_RANK")

_comm = None  # mpi4py's COMM_WORLD once init() has joined a world of 2 or more
_initialized = False


def _launched_size() -> int | None:
    """The world size the launcher announced (None: not started by an MPI launcher, or
    one that names no size)."""
    for name in _SIZE_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return None


def init() -> None:
    """Join the MPI world when this process was started by ``mpirun``/``mpiexec`` (or
    another MPI launcher) with two or more processes. Otherwise, or without mpi4py, the
    world has one process. Safe to call again; the other functions call it.

    mpi4py is imported only when the launcher's environment says there are other
    processes, so a plain run pays nothing for it.
    """
    global _comm, _initialized
    if _initialized:
        return
    _initialized = True
    size = _launched_size()
    if size == 1 or (size is None and not any(v in os.environ for v in _LAUNCH_VARIABLES)):
        return
    try:
        from mpi4py import MPI
    except ModuleNotFoundError as error:
        if error.name not in ("mpi4py", "mpi4py.MPI"):
            raise
        warnings.warn(
            f"started by an MPI launcher ({size or 'several'} processes), but mpi4py is not "
            "installed: each process runs alone as a world of 1. pip install 'rnnkit[mpi]'",
            RuntimeWarning, stacklevel=2)
        return
    if MPI.COMM_WORLD.Get_size() > 1:
        _comm = MPI.COMM_WORLD


def get_rank() -> int:
    """This process's rank, ``0 .. get_world_size() - 1``; 0 in a world of one."""
    init()
    return 0 if _comm is None else _comm.Get_rank()


def get_world_size() -> int:
    """The number of processes training together; 1 outside ``mpirun``."""
    init()
    return 1 if _comm is None else _comm.Get_size()


def shard(n: int, rank: int | None = None, world_size: int | None = None) -> np.ndarray:
    """The indices of ``range(n)`` that ``rank`` takes: one contiguous block, the first
    ``n % world_size`` ranks taking one more. Every index goes to exactly one rank, in
    order, so the blocks of ranks 0, 1, ... concatenate to ``range(n)``.

    Args:
        n: how many items (rows of a global batch, series) to share out.
        rank, world_size: default: this process's.

    Returns:
        An int64 array of indices (empty when ``n < world_size`` leaves this rank none).

    Example:
        >>> [shard(10, r, 3).tolist() for r in range(3)]
        [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    """
    if world_size is None:
        world_size = get_world_size()
    if rank is None:
        rank = get_rank()
    for name, value in (("n", n), ("rank", rank), ("world_size", world_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size) = [0, {world_size}), got {rank}")
    base, extra = divmod(int(n), int(world_size))
    start = rank * base + min(rank, extra)
    return np.arange(start, start + base + (rank < extra), dtype=np.int64)


def all_reduce(x: np.ndarray | Mapping[str, np.ndarray], op: str = "mean"):
    """The sum or mean over all ranks of an array, or of every array of a dict (a
    gradient dict from ``rnnkit.value_and_grad``), as new arrays; ``x`` is not changed.

    A dict travels as one flattened buffer (in the widest of its dtypes): one message
    per call, not one per parameter. Every rank gets the same result.

    Args:
        x: an ndarray, or a dict of them, of the same shapes and dtypes on every rank.
        op: ``"mean"`` or ``"sum"``. Default: ``"mean"``

    Returns:
        An ndarray, or a dict with the same keys, shapes and dtypes.

    Example:
        >>> all_reduce({"w": np.ones(2)}, op="sum")   # a world of one: a copy
        {'w': array([1., 1.])}
    """
    if op not in ("mean", "sum"):
        raise ValueError(f"op must be 'mean' or 'sum', got {op!r}")
    if isinstance(x, Mapping):
        arrays = {k: np.asarray(v) for k, v in x.items()}
        flat = _pack(arrays.values())
    else:
        arrays = None
        flat = np.array(x, order="C").reshape(-1)
    total = _sum_flat(flat)
    if op == "mean" and get_world_size() > 1:
        total = total / get_world_size()
    if arrays is None:
        x = np.asarray(x)
        return total.reshape(x.shape).astype(x.dtype, copy=False)
    return _unpack(total, arrays)


def broadcast_parameters(module, root: int = 0) -> None:
    """Overwrite every parameter of ``module`` (in place) with rank ``root``'s, in one
    message: after it, all ranks hold the same model. Nothing happens in a world of one.

    Args:
        module: an ``rnnkit.nn.Module`` built the same way on every rank.
        root: the rank whose parameters everyone takes. Default: 0
    """
    if get_world_size() == 1:
        return
    if not 0 <= root < get_world_size():
        raise ValueError(f"root must be in [0, {get_world_size()}), got {root}")
    params = [p for _, p in module.named_parameters()]
    flat = _pack(params)
    _comm.Bcast(flat, root=root)
    for p, value in zip(params, _unpack(flat, dict(enumerate(params))).values()):
        p[...] = value


# ---------------------------------------------------------------- one buffer


def _pack(arrays) -> np.ndarray:
    arrays = [np.asarray(a) for a in arrays]
    dtype = np.result_type(*arrays) if arrays else np.float64
    if not arrays:
        return np.zeros(0, dtype)
    return np.concatenate([a.reshape(-1).astype(dtype, copy=False) for a in arrays])


def _unpack(flat: np.ndarray, like: Mapping[str, np.ndarray]) -> dict:
    out, start = {}, 0
    for key, a in like.items():
        out[key] = flat[start: start + a.size].reshape(a.shape).astype(a.dtype, copy=True)
        start += a.size
    return out


def _sum_flat(flat: np.ndarray) -> np.ndarray:
    """The elementwise sum over ranks of a contiguous 1-D buffer, as a new array."""
    if get_world_size() == 1:
        return flat.copy()
    total = np.empty_like(flat)
    from mpi4py import MPI

    _comm.Allreduce(flat, total, op=MPI.SUM)
    return total


# ---------------------------------------------------------------- rnnkit train's helpers
# These never join a world themselves: they spread work over the world that `init()`
# joined (rnnkit train calls it), so code that did not ask for MPI, such as an estimator's
# fit inside somebody's MPI program, stays a world of one.


def _is_root() -> bool:
    """Rank 0 of the joined world, or a process that joined none."""
    return _comm is None or _comm.Get_rank() == 0


def _my_rows(n: int) -> np.ndarray:
    """This rank's block of ``range(n)`` (``shard``) in the joined world: all of it alone."""
    return np.arange(n) if _comm is None else shard(n, _comm.Get_rank(), _comm.Get_size())


def _batch_gradient(grads: dict, rows: int, batch_rows: int, **sums: float):
    """The global batch's gradient, from each rank's gradient of its mean loss over its
    ``rows`` of the ``batch_rows``: ``Σ_k (n_k / N) g_k``, with the sum over ranks of each
    of ``sums`` (the loss, the correct count) in the same single message.

    Returns ``(grads, sums)``; in a world of one, the very arguments (no copy, no change).
    """
    if _comm is None:
        return grads, sums
    weight = rows / batch_rows
    scaled = {k: np.asarray(g) * np.asarray(weight, np.asarray(g).dtype) for k, g in grads.items()}
    # in the gradients' dtype, so that a float32 model's buffer stays float32 (half the
    # bytes); its loss sum then has float32's 7 digits, its hit count is exact to 2**24
    dtype = np.result_type(*scaled.values()) if scaled else np.float64
    scalars = {f"\0{k}": np.asarray(v, dtype) for k, v in sums.items()}
    total = all_reduce({**scaled, **scalars}, op="sum")
    return ({k: total[k] for k in grads},
            {k: float(total[f"\0{k}"]) for k in sums})


def _map_rows(fn, items):
    """``fn(items)`` computed in shards: each rank applies ``fn`` to its block of
    ``items`` (rows out for items in) and every rank gets all the rows back, in order.
    A world of one calls ``fn(items)`` once."""
    if _comm is None:
        return fn(items)
    mine = _my_rows(len(items))
    part = fn([items[i] for i in mine]) if len(mine) else None
    parts = [p for p in _comm.allgather(part) if p is not None]
    return np.concatenate(parts) if parts else fn(items)  # no items: fn's empty answer


def _gather(obj) -> list | None:
    """Every rank's ``obj``, in rank order, on rank 0 (None elsewhere)."""
    if _comm is None:
        return [obj]
    return _comm.gather(obj, root=0)


def _abort_on_failure(status: int, exc: BaseException | None = None) -> int:
    """Called by the command line as it ends with ``status``: in a world of two or more,
    a failure (non-zero status, or ``exc``) on this rank ends every rank at once
    (``MPI_Abort``) instead of leaving the others waiting for it in a collective
    forever; the error was printed by this rank first. Otherwise returns ``status``."""
    if isinstance(exc, SystemExit) and not exc.code:  # sys.exit(0): not a failure
        exc = None
    if _comm is None or (status == 0 and exc is None):
        return status
    if exc is not None:
        traceback.print_exception(exc)
        status = 1
    print(f"rnnkit: rank {_comm.Get_rank()} of {_comm.Get_size()} failed; ending all ranks",
          file=sys.stderr)
    sys.stderr.flush()
    sys.stdout.flush()
    time.sleep(0.5)  # let mpirun forward this rank's last lines before it kills the job
    _comm.Abort(status)
    return status  # not reached
