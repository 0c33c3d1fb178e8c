r"""``lengths=`` and ``padding_side=`` in a layer call: a padded batch to the packed
layout the stack runs on, and its output back, without a ``PackedSequence``.

The stack (``_autodiff.stacked_layers`` with ``batch_sizes``) runs on a time-major
array whose rows are sorted by decreasing length, so that at step ``t`` the active
rows are always ``[0, batch_sizes[t])``; an inactive row outputs zeros, keeps its
state, and its input gets a zero gradient (the kernels zero its ``dz``)::

    lengths [2, 0, 3, 1]  ->  sorted_indices [2, 0, 3, 1]  (lengths sorted: [3, 2, 1, 0])
                          ->  batch_sizes [3, 2, 1]: t0: c a d | t1: c a | t2: c

    caller, right-padded (L = 4)         run layout (L_run = max(lengths) = 3)
           a   b   c   d                        c   a   d   b
      t0  a0   .  c0  d0                  s0   c0  a0  d0  ~
      t1  a1   .  c1   .                  s1   c1  a1  ~   ~
      t2   .   .  c2   .                  s2   c2  ~   ~   ~
      t3   .   .   .   .

    left-padded (padding_side='left'): sequence b's real steps are the last lengths[b]
    positions, its step s sits at time  t = (L - lengths[b]) + s:
           a   b   c   d
      t0   .   .   .   .
      t1   .   .  c0   .
      t2  a0   .  c1   .
      t3  a1   .  c2  d0

One gather takes the input into the run layout (``gather_t``, ``gather_b``: for run
step ``s`` and run row ``n``, the caller's time and batch index). The ``~`` places
are inactive; they read a real step (the row's own last one; a zero-length row the
longest sequence's first), never a padding value, so padding that is NaN (unequal
series in aeon's collections are NaN-padded) cannot reach a weight gradient through
``0 * NaN``.

One gather takes the output back (``scatter_t``, ``scatter_n``: for the caller's time
``t`` and sequence ``b``, where in the run output to read). A real step reads its own
place; a padding place must read a zero: an inactive place of its own run column
(there are ``L_run - lengths[b]`` of them) or, when ``L > L_run``, one zero step appended
after the run output (``extend``). Taking the padding places in order, the j-th reads
run step ``min(lengths[b] + j, L_run)``; right-padded, that is simply ``min(t, L_run)``.

``h_0`` goes in sorted (``h_0[:, sorted_indices]``) and ``h_n`` comes back in the
caller's order (``h_n[:, unsorted_indices]``), as the packed path does; a zero-length
row never runs, so its ``h_n`` is its ``h_0``.
"""

from __future__ import annotations

from typing import NamedTuple

import autograd.numpy as anp
import numpy as np
from autograd.tracer import getval

from ..._validate import call_lengths, from_torch

__all__ = ["Layout", "layout", "to_run", "from_run"]


class Layout(NamedTuple):
    """Where each step of a ``lengths=`` call goes, computed once per (lengths, L, side)."""

    batch_sizes: np.ndarray             # (L_run,) rows active at each run step
    sorted_indices: np.ndarray | None   # (N,) run row n is the caller's sequence
                                        # sorted_indices[n]; None: already sorted
    unsorted_indices: np.ndarray | None  # (N,) its inverse
    gather_t: np.ndarray                # (L_run, N) caller's time of run step s, row n
    gather_b: np.ndarray                # (L_run, N) caller's sequence of run row n
    scatter_t: np.ndarray               # (L, N) run step the caller's (t, b) reads
    scatter_n: np.ndarray               # (L, N) run row the caller's (t, b) reads
    extend: bool                        # a zero step follows the run output (L > L_run)


def _compute(lengths: np.ndarray, L: int, left: bool) -> Layout:
    """The layout of checked int64 ``lengths`` (the pictures of the module docstring)."""
    N = lengths.size
    order = np.argsort(-lengths, kind="stable")  # torch's enforce_sorted=False order
    run_lengths = lengths[order]  # (N,) decreasing
    L_run = int(run_lengths[0]) if N else 0
    steps = np.arange(L_run, dtype=np.int64)
    batch_sizes = (run_lengths[None, :] > steps[:, None]).sum(axis=1).astype(np.int64)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(N)
    start = (L - lengths) if left else np.zeros_like(lengths)  # (N,) time of each step 0

    # input: run (s, n) <- caller (start[b] + min(s, lengths[b] - 1), b), b = order[n];
    # a zero-length row reads the longest sequence instead (its place is never active)
    b = np.where(run_lengths > 0, order, order[0] if N else 0)  # (N,)
    last = np.maximum(lengths[b] - 1, 0)
    gather_t = start[b][None, :] + np.minimum(steps[:, None], last[None, :])  # (L_run, N)
    gather_b = np.broadcast_to(b, (L_run, N))

    # output: caller (t, b) <- run (t - start[b], inverse[b]) on its real steps; the j-th
    # padding place of column b (j = t - lengths[b] right-padded, j = t left-padded)
    # reads run step min(lengths[b] + j, L_run), a zero (see the module's docstring)
    t = np.arange(L, dtype=np.int64)[:, None]  # (L, 1)
    real = (t >= start) & (t < start + lengths)  # (L, N)
    j = t if left else t - lengths
    scatter_t = np.where(real, t - start, np.minimum(lengths + j, L_run))
    scatter_n = np.broadcast_to(inverse, (L, N))
    sorted_ = not np.array_equal(order, np.arange(N))
    return Layout(batch_sizes, order if sorted_ else None, inverse if sorted_ else None,
                  gather_t, gather_b, scatter_t, scatter_n, L > L_run)


_LAYOUTS: dict = {}  # (dtype, N, lengths' bytes, L, left) -> Layout: a training loop
_CACHED = 256         # repeats its batches' lengths; bounded, emptied when full


def layout(lengths, N: int, L: int, left: bool) -> Layout:
    """The :class:`Layout` of the call's ``lengths`` (checked: a clear error naming
    ``lengths``) over ``N`` sequences of ``L`` padded steps (``left``: padding_side='left').
    A repeat of lengths already seen costs one dict look-up, checks included."""
    array = lengths if type(lengths) is np.ndarray else np.asarray(from_torch(getval(lengths)))
    key = (array.dtype.str, N, array.tobytes(), L, left)
    found = _LAYOUTS.get(key)
    if found is None:
        found = _compute(call_lengths(array, N, L), L, left)
        if len(_LAYOUTS) >= _CACHED:
            _LAYOUTS.clear()
        _LAYOUTS[key] = found
    return found


def to_run(input, lay: Layout, batch_first: bool):
    """The caller's padded ``input`` ((L, N, H_in), or (N, L, H_in) with ``batch_first``)
    in the run layout ``(L_run, N, H_in)``: one gather, which autograd differentiates."""
    if batch_first:
        return input[lay.gather_b, lay.gather_t]
    return input[lay.gather_t, lay.gather_b]


def from_run(output, lay: Layout, batch_first: bool):
    """The run output ``(L_run, N, W)`` in the caller's layout ``(L, N, W)`` (``(N, L, W)``
    with ``batch_first``), zeros at padding places: one gather (after appending one zero
    step when ``L > L_run``)."""
    if lay.extend:
        zero = anp.zeros((1,) + tuple(getval(output).shape[1:]), dtype=getval(output).dtype)
        output = anp.concatenate([output, zero], axis=0)  # (L_run + 1, N, W)
    if batch_first:
        return output[lay.scatter_t.T, lay.scatter_n.T]  # (N, L, W), contiguous
    return output[lay.scatter_t, lay.scatter_n]
