r"""Packing utilities, exactly as ``torch.nn.utils.rnn``.

A ``PackedSequence`` stores a batch of variable-length sequences without padding:
sorted by decreasing length, step by step, only the sequences still running::

    lengths [3, 2, 1] -> batch_sizes [3, 2, 1]
    data:  t0: a0 b0 c0 | t1: a1 b1 | t2: a2          (6 rows = sum(lengths))

Every function here is differentiable: each is one gather (fancy indexing) that
autograd knows how to transpose.
"""

from __future__ import annotations

from typing import NamedTuple

import autograd.numpy as anp
import numpy as np
from autograd.tracer import getval

from ..._validate import from_torch, numeric_array

__all__ = [
    "PackedSequence",
    "pack_padded_sequence",
    "pad_packed_sequence",
    "pack_sequence",
    "pad_sequence",
    "unpad_sequence",
    "unpack_sequence",
    "invert_permutation",
]


def invert_permutation(permutation: np.ndarray | None) -> np.ndarray | None:
    """The permutation that undoes ``permutation`` (None stays None)."""
    if permutation is None:
        return None
    permutation = np.asarray(permutation, dtype=np.int64)
    inverse = np.empty_like(permutation)
    inverse[permutation] = np.arange(permutation.size, dtype=np.int64)
    return inverse


class _PackedSequenceBase(NamedTuple):
    data: np.ndarray
    batch_sizes: np.ndarray
    sorted_indices: np.ndarray | None
    unsorted_indices: np.ndarray | None


class PackedSequence(_PackedSequenceBase):
    r"""A batch of variable-length sequences, packed, as ``torch.nn.utils.rnn.PackedSequence``.

    Fields:
        data: ``(sum(lengths), *)`` the steps of all sequences, time-major.
        batch_sizes: ``(max_len,)`` int64, sequences still running at each step.
        sorted_indices: ``(N,)`` int64 order the batch was sorted in, or None if it
            came sorted.
        unsorted_indices: ``(N,)`` int64 inverse of ``sorted_indices``.

    Build it with :func:`pack_padded_sequence` or :func:`pack_sequence`, not by hand.
    """

    __slots__ = ()

    def __new__(cls, data, batch_sizes=None, sorted_indices=None, unsorted_indices=None):
        if batch_sizes is None:
            raise ValueError(
                "batch_sizes is required; build a PackedSequence with pack_padded_sequence "
                "or pack_sequence"
            )
        batch_sizes = np.asarray(batch_sizes, dtype=np.int64)
        if sorted_indices is not None:
            sorted_indices = np.asarray(sorted_indices, dtype=np.int64)
        if unsorted_indices is None:
            unsorted_indices = invert_permutation(sorted_indices)
        else:
            unsorted_indices = np.asarray(unsorted_indices, dtype=np.int64)
        return super().__new__(cls, data, batch_sizes, sorted_indices, unsorted_indices)

    @property
    def is_cuda(self) -> bool:  # torch code asks; rnnkit runs on the CPU only
        return False

    def is_pinned(self) -> bool:
        return False


def _as_lengths(lengths, batch: int | None = None) -> np.ndarray:
    """``lengths`` as a 1-D int64 array, from a list, tuple or any integer array."""
    array = np.asarray(from_torch(getval(lengths)))
    if array.ndim != 1:
        raise ValueError(f"lengths must be 1-D (one length per sequence), got shape {array.shape}")
    if array.size and not (
        np.issubdtype(array.dtype, np.integer)
        or (np.issubdtype(array.dtype, np.floating) and np.all(array == np.round(array)))
    ):
        raise TypeError(f"lengths must be integers, got {array.dtype} values {array.tolist()}")
    array = array.astype(np.int64)
    if batch is not None and array.size != batch:
        raise ValueError(
            f"lengths must have one entry per sequence in the batch: expected {batch} "
            f"entries, got {array.size}"
        )
    return array


def _batch_sizes(sorted_lengths: np.ndarray) -> np.ndarray:
    """``batch_sizes[t]`` = number of sequences longer than ``t`` (lengths sorted, decreasing)."""
    steps = np.arange(int(sorted_lengths[0]), dtype=np.int64)
    return (sorted_lengths[None, :] > steps[:, None]).sum(axis=1).astype(np.int64)


def _packed_rows(batch_sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each packed row, its step ``t`` and its (sorted) batch position ``n``."""
    t = np.repeat(np.arange(batch_sizes.size, dtype=np.int64), batch_sizes)
    starts = np.concatenate([[0], np.cumsum(batch_sizes)[:-1]]).astype(np.int64)
    n = np.arange(t.size, dtype=np.int64) - np.repeat(starts, batch_sizes)
    return t, n


def pack_padded_sequence(
    input: np.ndarray,
    lengths,
    batch_first: bool = False,
    enforce_sorted: bool = True,
) -> PackedSequence:
    r"""Pack a padded batch of variable-length sequences.

    Args:
        input: ``(T, N, *)`` padded batch; ``(N, T, *)`` if ``batch_first``.
        lengths: the length of each sequence (list, tuple or integer array), ``N`` entries.
        batch_first: whether ``input`` is ``(N, T, *)``.
        enforce_sorted: if True, ``lengths`` must be in decreasing order (equal
            lengths are fine); if False they are sorted here and the order is
            remembered in ``sorted_indices``.

    Returns:
        PackedSequence

    Raises:
        ValueError: lengths unsorted with ``enforce_sorted=True``, a length of 0, or
            longer than the padded input; a lengths count that is not the batch size.

    Example:
        >>> import numpy as np
        >>> x = np.arange(6, dtype=np.float32).reshape(3, 2, 1)   # (T=3, N=2, 1)
        >>> packed = pack_padded_sequence(x, [3, 1])
        >>> packed.data.ravel().tolist(), packed.batch_sizes.tolist()
        ([0.0, 1.0, 2.0, 4.0], [2, 1, 1])
    """
    numeric_array("input", input)  # any dtype packs, as in torch
    if input.ndim < 2:
        raise ValueError(
            "input must have at least 2 dimensions, (seq_len, batch, *) or with "
            f"batch_first=True (batch, seq_len, *), got shape {input.shape}"
        )
    T, N = (input.shape[1], input.shape[0]) if batch_first else input.shape[:2]
    lengths = _as_lengths(lengths, N)
    if N == 0:
        raise ValueError("input must hold at least one sequence, got batch size 0")
    if np.any(lengths <= 0):
        raise ValueError(
            "every length must be at least 1 (a PackedSequence holds no empty sequence), "
            f"got lengths {lengths.tolist()}"
        )
    if np.any(lengths > T):
        raise ValueError(
            f"lengths must not exceed the padded length of input (seq_len = {T}), got "
            f"lengths {lengths.tolist()}"
        )
    if enforce_sorted:
        if np.any(np.diff(lengths) > 0):
            raise ValueError(
                f"lengths must be in decreasing order when enforce_sorted=True, got "
                f"{lengths.tolist()}; pass enforce_sorted=False to have them sorted"
            )
        sorted_indices = None
        sorted_lengths = lengths
    else:
        sorted_indices = np.argsort(-lengths, kind="stable").astype(np.int64)
        sorted_lengths = lengths[sorted_indices]
    batch_sizes = _batch_sizes(sorted_lengths)
    t, n = _packed_rows(batch_sizes)
    b = n if sorted_indices is None else sorted_indices[n]  # original batch position
    data = input[b, t] if batch_first else input[t, b]  # one gather: (sum(lengths), *)
    return PackedSequence(data, batch_sizes, sorted_indices, None)


def _check_packed(name: str, sequence) -> None:
    if not isinstance(sequence, PackedSequence):
        raise TypeError(f"{name} must be a PackedSequence, got {type(sequence).__name__}")


def pad_packed_sequence(
    sequence: PackedSequence,
    batch_first: bool = False,
    padding_value: float = 0.0,
    total_length: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Undo :func:`pack_padded_sequence`: a padded batch and the lengths.

    Args:
        sequence: the PackedSequence.
        batch_first: return ``(N, T, *)`` instead of ``(T, N, *)``.
        padding_value: the value of the padded positions.
        total_length: pad to this many steps (at least the longest sequence).

    Returns:
        ``(padded, lengths)``: ``lengths`` int64 ``(N,)`` in the caller's original
        batch order, as is the batch axis of ``padded``.

    Example:
        >>> import numpy as np
        >>> packed = pack_sequence([np.ones((2, 1)), np.ones((3, 1))], enforce_sorted=False)
        >>> padded, lengths = pad_packed_sequence(packed, batch_first=True)
        >>> padded.shape, lengths.tolist()
        ((2, 3, 1), [2, 3])
    """
    _check_packed("sequence", sequence)
    data, batch_sizes = sequence.data, sequence.batch_sizes
    max_len, N = batch_sizes.size, int(batch_sizes[0])
    if total_length is not None:
        if total_length < max_len:
            raise ValueError(
                "Expected total_length to be at least the length of the longest sequence "
                f"in input, but got total_length={total_length} and max sequence length "
                f"being {max_len}"
            )
        max_len = int(total_length)
    t, n = _packed_rows(batch_sizes)
    unsorted = sequence.unsorted_indices
    b = n if unsorted is None else invert_permutation(unsorted)[n]
    # source[T, N] = packed row at that place, or the extra padding row at the end
    rows = data.shape[0]
    source = np.full((max_len, N), rows, dtype=np.int64)
    source[t, b] = np.arange(rows)
    pad_row = anp.full((1,) + tuple(data.shape[1:]), padding_value, dtype=data.dtype)
    extended = anp.concatenate([data, pad_row], axis=0)
    padded = extended[source.T if batch_first else source]  # (T, N, *) or (N, T, *)
    sorted_lengths = (np.arange(N)[None, :] < batch_sizes[:, None]).sum(axis=0)
    lengths = sorted_lengths if unsorted is None else sorted_lengths[unsorted]
    return padded, lengths.astype(np.int64)


def pad_sequence(
    sequences,
    batch_first: bool = False,
    padding_value: float = 0.0,
    padding_side: str = "right",
) -> np.ndarray:
    r"""Stack sequences of different lengths ``(L_i, *)`` into one padded array.

    Args:
        sequences: a list of arrays, each ``(L_i, *)`` with the same trailing shape.
        batch_first: return ``(N, T, *)`` instead of ``(T, N, *)``, ``T = max L_i``.
        padding_value: the value of the padded positions.
        padding_side: ``"right"`` (pad after each sequence) or ``"left"``.

    Example:
        >>> import numpy as np
        >>> pad_sequence([np.ones(3), np.ones(1)], batch_first=True).tolist()
        [[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    sequences = list(sequences)
    if not sequences:
        raise ValueError("sequences must hold at least one array, got an empty list")
    for k, seq in enumerate(sequences):
        value = getval(seq)
        if not isinstance(value, np.ndarray):
            raise TypeError(f"sequences[{k}] must be a numpy array, got {type(value).__name__}")
        if value.ndim < 1:
            raise ValueError(f"sequences[{k}] must have at least 1 dimension (L, *), got a scalar")
    trailing = getval(sequences[0]).shape[1:]
    for k, seq in enumerate(sequences):
        if getval(seq).shape[1:] != trailing:
            raise ValueError(
                f"every sequence must have the same trailing shape (L_i, *) = (L_i, "
                f"{', '.join(map(str, trailing))}); sequences[0] has {getval(sequences[0]).shape}"
                f", sequences[{k}] has {getval(seq).shape}"
            )
    lengths = [getval(seq).shape[0] for seq in sequences]
    T = max(lengths)
    dtype = np.result_type(*(getval(s).dtype for s in sequences))
    pieces = []
    for seq, length in zip(sequences, lengths):
        pad = anp.full((T - length,) + trailing, padding_value, dtype=dtype)
        seq = seq if getval(seq).dtype == dtype else anp.array(seq, dtype=dtype)
        pieces.append(anp.concatenate([seq, pad] if padding_side == "right" else [pad, seq]))
    return anp.stack(pieces, axis=0 if batch_first else 1)


def pack_sequence(sequences, enforce_sorted: bool = True) -> PackedSequence:
    r"""Pack a list of sequences ``(L_i, *)`` (``pad_sequence`` then ``pack_padded_sequence``).

    Example:
        >>> import numpy as np
        >>> pack_sequence([np.ones((3, 2)), np.ones((2, 2))]).batch_sizes.tolist()
        [2, 2, 1]
    """
    sequences = list(sequences)
    lengths = [getval(seq).shape[0] if getval(seq).ndim else 0 for seq in sequences]
    return pack_padded_sequence(pad_sequence(sequences), lengths, enforce_sorted=enforce_sorted)


def unpad_sequence(padded_sequences: np.ndarray, lengths, batch_first: bool = False) -> list:
    r"""Split a padded batch into a list of its sequences ``(L_i, *)``.

    Example:
        >>> import numpy as np
        >>> [s.shape for s in unpad_sequence(np.zeros((3, 2, 4)), [3, 1])]
        [(3, 4), (1, 4)]
    """
    numeric_array("padded_sequences", padded_sequences)
    if padded_sequences.ndim < 2:
        raise ValueError(
            "padded_sequences must have at least 2 dimensions (seq_len, batch, *), "
            f"got shape {padded_sequences.shape}"
        )
    T, N = (
        padded_sequences.shape[1::-1] if batch_first else padded_sequences.shape[:2]
    )
    lengths = _as_lengths(lengths, N)
    if np.any(lengths < 0) or np.any(lengths > T):
        raise ValueError(
            f"lengths must lie in [0, seq_len = {T}], got {lengths.tolist()}"
        )
    if batch_first:
        return [padded_sequences[b, : lengths[b]] for b in range(N)]
    return [padded_sequences[: lengths[b], b] for b in range(N)]


def unpack_sequence(packed_sequences: PackedSequence) -> list:
    r"""Split a PackedSequence into its sequences ``(L_i, *)``, in the original order.

    Example:
        >>> import numpy as np
        >>> seqs = [np.ones((1, 2)), np.ones((3, 2))]
        >>> [s.shape for s in unpack_sequence(pack_sequence(seqs, enforce_sorted=False))]
        [(1, 2), (3, 2)]
    """
    _check_packed("packed_sequences", packed_sequences)
    padded, lengths = pad_packed_sequence(packed_sequences, batch_first=True)
    return unpad_sequence(padded, lengths, batch_first=True)


# ---------------------------------------------------------------- used by the layers


def _packed_to_padded(data, batch_sizes: np.ndarray):
    """``data (sum(lengths), *)`` -> ``(T, N, *)`` in sorted batch order, zeros past each end."""
    T, N = batch_sizes.size, int(batch_sizes[0])
    t, n = _packed_rows(batch_sizes)
    rows = data.shape[0]
    source = np.full((T, N), rows, dtype=np.int64)  # the extra zero row by default
    source[t, n] = np.arange(rows)
    extended = anp.concatenate([data, anp.zeros((1,) + tuple(data.shape[1:]), dtype=data.dtype)])
    return extended[source]


def _padded_to_packed(padded, batch_sizes: np.ndarray):
    """``(T, N, *)`` in sorted batch order -> ``(sum(lengths), *)``: the inverse gather."""
    t, n = _packed_rows(batch_sizes)
    return padded[t, n]
