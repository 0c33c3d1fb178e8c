r"""Streaming: stateful inference over a recurrent layer, one chunk of steps at a time.

A :class:`Stream` carries ``h`` (and the LSTM's ``c``) from one call to the next, so
that the outputs of consecutive chunks equal one call on the concatenated input::

    stream = lstm.stream(batch_size=3)
    y_0 = stream(x[0:4])          # == lstm(x)[0][0:4]
    y_1 = stream(x[4])            # one step (N, H_in) -> (N, H_out): == lstm(x)[0][4]

It runs on the weights as they were when the stream was made, with no dropout and no
gradients (a layer's cell options with their eval semantics: no recurrent dropout,
zoneout's interpolation): a chunk of a plain layer small enough for ``_ops.SmallStack``
(every layer in one compiled call) runs there, its weights packed into panels on the
first such chunk and reused on every later one; a larger chunk runs the layer-by-layer
inference kernels (``_autodiff._stack_forward`` with ``keep=False``: no gates, no
histories).
"""

from __future__ import annotations

import numpy as np
from autograd.tracer import getval, isbox

from ... import _ops
from ..._autodiff import StackSpec, _stack_forward
from ..._modes import MODES
from ..._validate import float_array, int_arg

__all__ = ["Stream"]


class Stream:
    r"""Stateful inference over an ``LSTM``, ``GRU`` or ``RNN``: made by ``layer.stream()``.

    Call it on consecutive chunks of the same batch of sequences; each call continues from
    the state the previous one left. The weights are the layer's when the stream was made
    (later training does not change them).

    Shape:
        chunk: (T_c, N, H_in), (N, T_c, H_in) if the layer is ``batch_first``, or one step
        (N, H_in). Returns (T_c, N, H_out) (batch-first: (N, T_c, H_out)), or (N, H_out)
        for one step. ``state``: h (num_layers, N, H_out); the LSTM's is (h, c), c
        (num_layers, N, H_cell): torch's ``h_n`` / ``c_n`` layout.

    Example:
        >>> import numpy as np
        >>> from rnnkit import nn
        >>> lstm = nn.LSTM(10, 20, num_layers=2)
        >>> stream = lstm.stream(batch_size=3)
        >>> stream(np.zeros((4, 3, 10), np.float32)).shape    # four steps
        (4, 3, 20)
        >>> stream(np.zeros((3, 10), np.float32)).shape       # then one
        (3, 20)
        >>> h, c = stream.state
        >>> h.shape, c.shape
        ((2, 3, 20), (2, 3, 20))
        >>> stream.reset([0, 2])      # rows 0 and 2 start again from zero
    """

    # ``_weights``: the snapshot, in the stack's flat order; ``_small``: the same weights
    # laid out and packed for the one-call engine, made from the snapshot on the first
    # chunk small enough for it (None until then)
    __slots__ = ("_spec", "_weights", "_small", "_h", "_c", "_N", "_H_in", "_H_out",
                 "_H_cell", "_dtype", "_batch_first", "_name")

    def __init__(self, spec: StackSpec, weights: list, h: np.ndarray, c: np.ndarray | None,
                 input_size: int, batch_first: bool, name: str):
        """Use ``layer.stream()``; ``weights`` are copies, ``h``/``c`` checked states."""
        self._spec = spec
        self._weights = weights
        self._small = None
        self._H_cell = weights[1].shape[1] if c is None else c.shape[2]  # H of the kernels
        self._dtype = h.dtype
        self._N, self._H_out = h.shape[1], h.shape[2]
        self._H_in = input_size
        self._batch_first = batch_first
        self._name = name
        self._h, self._c = h, c  # never written in place: each call makes new ones

    def __repr__(self) -> str:
        return f"Stream({self._name}, batch_size={self._N})"

    @property
    def batch_size(self) -> int:
        """N, the sequences this stream carries."""
        return self._N

    @property
    def state(self):
        """``h`` (``num_layers, N, H_out``), or ``(h, c)`` for an LSTM: the state after the
        last step seen, torch's ``h_n``/``c_n`` layout. Read-only arrays that the stream never
        changes afterwards (each call makes new ones)."""
        if self._c is None:
            return _frozen(self._h)
        return _frozen(self._h), _frozen(self._c)

    def reset(self, rows=None) -> None:
        """Zero the state of every sequence (``rows=None``), or of the batch rows ``rows``
        (an int, a list of ints, an integer array, or a bool mask of N entries)."""
        if rows is None:
            self._h = np.zeros_like(self._h)
            self._c = None if self._c is None else np.zeros_like(self._c)
            return
        index = _rows(rows, self._N)
        for name in ("_h", "_c"):
            state = getattr(self, name)
            if state is not None:
                state = state.copy()  # the old one may be in the caller's hands
                state[:, index] = 0
                setattr(self, name, state)

    def __call__(self, chunk: np.ndarray) -> np.ndarray:
        """Run ``chunk``'s steps from the current state; returns their outputs."""
        if type(chunk) is not np.ndarray or chunk.dtype != self._dtype:
            self._refuse(chunk)
        shape = chunk.shape
        if len(shape) == 2:  # one step (N, H_in)
            if shape[0] != self._N or shape[1] != self._H_in:
                self._refuse(chunk)
            x = chunk[None]  # (1, N, H_in)
        elif len(shape) == 3:
            if (shape[0] if self._batch_first else shape[1]) != self._N \
                    or shape[2] != self._H_in:
                self._refuse(chunk)
            x = chunk.transpose(1, 0, 2) if self._batch_first else chunk  # (T_c, N, H_in)
            if x.shape[0] == 0:  # nothing to run: no output steps, the state stays
                empty = (self._N, 0, self._H_out) if self._batch_first else \
                    (0, self._N, self._H_out)
                return np.empty(empty, self._dtype)
        else:
            self._refuse(chunk)
        spec = self._spec
        if spec.one_call(x, self._H_cell, self._H_out):
            small, pack = self._small, False
            if small is None:  # lay the snapshot out once, pack its panels on this call
                small = self._small = _ops.SmallStack(spec.mode, self._weights,
                                                      spec.num_layers, 1, spec.bias, spec.proj)
                pack = True
            output, h, c = small.run(x, self._h, self._c, None, pack=pack)
        else:
            output, h, c, _ = _stack_forward(spec, x, self._h, self._c, self._weights,
                                             keep=False)
        self._h, self._c = h, c
        if len(shape) == 2:
            return output[0]  # (N, H_out)
        return output.transpose(1, 0, 2) if self._batch_first else output

    def _refuse(self, chunk):
        """The clear error for a chunk the fast path did not take (or a subclass of
        ndarray, which it runs as its base class)."""
        if isbox(chunk):
            raise TypeError(
                "chunk is a value being differentiated, but a stream runs inference only and "
                "keeps no gradients; call the layer itself inside rnnkit.grad"
            )
        array = float_array("chunk", chunk, self._dtype)
        N, H_in = self._N, self._H_in
        steps = "(batch, steps, input_size)" if self._batch_first else \
            "(steps, batch, input_size)"
        if array.ndim == 2:
            if array.shape[1] != H_in:
                raise ValueError(
                    f"chunk must have shape (batch, input_size) = ({N}, {H_in}) for one step, "
                    f"got {array.shape}: its last axis must be input_size = {H_in}"
                )
            if array.shape[0] != N:
                raise ValueError(
                    f"chunk must have shape (batch, input_size) = ({N}, {H_in}) for one step, "
                    f"got {array.shape}; its batch ({array.shape[0]}) must equal the stream's "
                    f"batch_size ({N})"
                )
        elif array.ndim == 3:
            batch = array.shape[0] if self._batch_first else array.shape[1]
            expected = (N, array.shape[1], H_in) if self._batch_first else \
                (array.shape[0], N, H_in)
            if array.shape[2] != H_in:
                raise ValueError(
                    f"chunk must have shape {steps} = {expected}, got {array.shape}: its last "
                    f"axis must be input_size = {H_in}"
                )
            if batch != N:
                raise ValueError(
                    f"chunk must have shape {steps} = {expected}, got {array.shape}; its batch "
                    f"({batch}) must equal the stream's batch_size ({N})"
                )
        else:
            raise ValueError(
                f"chunk must be 3-D {steps} or 2-D one step (batch, input_size), got "
                f"{array.ndim}-D shape {array.shape}"
            )
        return self(np.asarray(array))  # a subclass of ndarray that is otherwise right


def _frozen(state: np.ndarray) -> np.ndarray:
    """``state``, read-only: what ``Stream.state`` hands out cannot change the stream."""
    state.setflags(write=False)
    return state


def _rows(rows, N: int):
    """``rows`` of ``reset`` checked: batch indices in ``[-N, N)`` or a bool mask of N."""
    index = np.asarray(rows)
    if index.dtype == np.bool_:
        if index.shape != (N,):
            raise ValueError(
                f"rows as a bool mask must have one entry per sequence, shape ({N},), got "
                f"shape {index.shape}"
            )
        return index
    if index.size and not np.issubdtype(index.dtype, np.integer):
        raise TypeError(f"rows must be batch indices (ints), got {index.dtype} values "
                        f"{index.tolist()}")
    index = index.astype(np.int64)
    if index.ndim > 1 or np.any((index < -N) | (index >= N)):
        raise ValueError(
            f"rows must be batch indices in [0, batch_size = {N}), got {index.tolist()}"
        )
    return index


def stream_of(layer, batch_size, hx) -> Stream:
    """``layer.stream(batch_size, hx)``: checks, then the weight snapshot."""
    mode = MODES[layer.mode]
    if layer.bidirectional:
        raise ValueError(
            "a bidirectional layer cannot stream: its reverse direction reads each sequence "
            "from its last step, which a stream has not seen yet; call the layer on whole "
            "sequences instead, or stream a layer built with bidirectional=False"
        )
    H_out = layer.proj_size or layer.hidden_size
    shape_h = (layer.num_layers, H_out)
    if batch_size is not None:
        batch_size = int_arg("batch_size", batch_size, minimum=1)
    if hx is None:
        N = 1 if batch_size is None else batch_size
        h = np.zeros((layer.num_layers, N, H_out), layer.dtype)
        c = np.zeros((layer.num_layers, N, layer.hidden_size), layer.dtype) \
            if mode.cell_state else None
    else:
        hx = getval(hx)
        if mode.cell_state:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"hx must be a tuple (h_0, c_0) for the LSTM, got "
                                f"{type(hx).__name__}")
            h, c = getval(hx[0]), getval(hx[1])
        else:
            if isinstance(hx, (tuple, list)):
                raise TypeError(f"hx must be one array h_0 for the {layer.mode[:3]}, got a "
                                f"{type(hx).__name__}")
            h, c = hx, None
        N = float_array("h_0", h, layer.dtype).shape[1] if np.ndim(h) == 3 else None
        if N is None:
            raise ValueError(
                f"h_0 of a stream must be 3-D (num_layers, batch, "
                f"{'proj_size' if layer.proj_size else 'hidden_size'}) = "
                f"{(shape_h[0], '?', shape_h[1])}, got shape {np.shape(h)}"
            )
        if batch_size is not None and batch_size != N:
            raise ValueError(f"batch_size ({batch_size}) must equal the batch of h_0 ({N}), "
                             f"or be left out")
        h_size = "proj_size" if layer.proj_size else "hidden_size"
        h = np.array(layer._check_state("h_0", h, N, H_out, False, h_size))
        if mode.cell_state:
            c = np.array(layer._check_state("c_0", c, N, layer.hidden_size, False,
                                            "hidden_size"))
    spec = StackSpec(layer.mode, layer.num_layers, 1, 0.0, False, None, layer.bias,
                     bool(layer.proj_size), layer._options)  # eval: zoneout interpolates
    weights = [np.array(getval(w), order="C") for w in layer._flat_weights()]  # the snapshot
    return Stream(spec, weights, h, c, layer.input_size, layer.batch_first,
                  type(layer).__name__)
