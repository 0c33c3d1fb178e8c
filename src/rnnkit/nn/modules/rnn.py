r"""Recurrent layers and cells with torch's arguments, shapes, parameter names and math.

One ``RNNBase.forward`` serves LSTM, GRU and RNN: it checks the input at the
public boundary (every message names the argument, the expected shape in the
vocabulary of torch's docs and what came), packs or pads, and hands the stack to
``_autodiff.stacked_layers`` (what ``nn.functional.recurrent_layers`` calls too).
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
from autograd.tracer import getval

from ..._autodiff import gru_layer, lstm_layer, rnn_layer, stacked_layers
from ..._random import default_generator
from ..utils.rnn import PackedSequence, _packed_to_padded, _padded_to_packed
from .module import Module, Parameter

__all__ = ["RNNBase", "LSTM", "GRU", "RNN", "RNNCellBase", "LSTMCell", "GRUCell", "RNNCell"]

_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def _dtype(dtype) -> np.dtype:
    resolved = np.dtype(np.float32 if dtype is None else dtype)
    if resolved not in (np.float32, np.float64):
        raise TypeError(f"dtype must be np.float32 or np.float64, got {resolved}")
    return resolved


def _positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def _check_nonlinearity(nonlinearity) -> str:
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"Unknown nonlinearity {nonlinearity!r}. Select from 'tanh' or 'relu'.")
    return nonlinearity


def _check_array(name: str, value, dtype: np.dtype) -> np.ndarray:
    """``value`` must be a float array of the layer's dtype: never cast silently."""
    array = getval(value)
    if hasattr(array, "detach") and hasattr(array, "numpy"):
        raise TypeError(
            f"{name} must be a numpy array, got a torch tensor; pass {name}.numpy()"
        )
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(array).__name__}")
    if array.dtype != dtype:
        if not np.issubdtype(array.dtype, np.floating):
            raise TypeError(f"{name} must be a float32 or float64 array, got {array.dtype}")
        raise TypeError(
            f"{name} has dtype {array.dtype} but the layer's parameters are {dtype}; convert "
            f"with {name}.astype(np.{dtype}) or build the layer with dtype=np.{array.dtype}"
        )
    return array


def _expect_shape(name: str, array, expected: tuple, spelled: str, hint: str = "") -> None:
    shape = tuple(getval(array).shape)
    if shape != tuple(expected):
        raise ValueError(f"{name} must have shape {spelled} = {tuple(expected)}, got {shape}{hint}")


class RNNBase(Module):
    """The machinery shared by :class:`LSTM`, :class:`GRU` and :class:`RNN`."""

    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, proj_size=0,
                 dtype=None):
        super().__init__()
        self.mode = mode
        self.input_size = _positive_int("input_size", input_size, minimum=0)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        self.num_layers = _positive_int("num_layers", num_layers)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        if (isinstance(dropout, bool) or not isinstance(dropout, numbers.Number)
                or not 0 <= dropout <= 1):
            raise ValueError(
                "dropout should be a number in range [0, 1] representing the probability "
                f"of an element being zeroed, got {dropout!r}"
            )
        self.dropout = float(dropout)
        if self.dropout > 0 and self.num_layers == 1:
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero "
                f"dropout expects num_layers greater than 1, but got dropout={dropout} and "
                f"num_layers={num_layers}",
                UserWarning,
                stacklevel=3,
            )
        self.bidirectional = bool(bidirectional)
        if isinstance(proj_size, bool) or not isinstance(proj_size, numbers.Integral):
            raise TypeError(f"proj_size must be an int, got {type(proj_size).__name__}")
        if proj_size < 0:
            raise ValueError(
                "proj_size should be a positive integer or zero to disable projections, "
                f"got {proj_size}"
            )
        if proj_size >= self.hidden_size:
            raise ValueError(
                f"proj_size has to be smaller than hidden_size, got proj_size={proj_size} "
                f">= hidden_size={self.hidden_size}"
            )
        if proj_size and mode != "LSTM":
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        self.proj_size = int(proj_size)
        self.dtype = _dtype(dtype)

        D = 2 if self.bidirectional else 1
        G = _GATES[mode] * self.hidden_size
        H_out = self.proj_size or self.hidden_size
        k = 1.0 / math.sqrt(self.hidden_size)
        self._flat_weights_names = []
        for layer in range(self.num_layers):
            layer_input = self.input_size if layer == 0 else H_out * D
            for direction in range(D):
                suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
                shapes = [(f"weight_ih{suffix}", (G, layer_input)),
                          (f"weight_hh{suffix}", (G, H_out))]
                if self.bias:
                    shapes += [(f"bias_ih{suffix}", (G,)), (f"bias_hh{suffix}", (G,))]
                if self.proj_size:
                    shapes += [(f"weight_hr{suffix}", (self.proj_size, self.hidden_size))]
                for name, shape in shapes:
                    # torch's init: U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))
                    value = default_generator().uniform(-k, k, size=shape).astype(self.dtype)
                    setattr(self, name, Parameter(value))
                    self._flat_weights_names.append(name)

    # ------------------------------------------------------------ torch compatibility

    @property
    def all_weights(self) -> list[list[Parameter]]:
        """Parameters grouped per layer-direction, as torch's ``all_weights``."""
        per = len(self._flat_weights_names) // (self.num_layers * self._directions)
        names = self._flat_weights_names
        return [[getattr(self, n) for n in names[i: i + per]] for i in range(0, len(names), per)]

    def flatten_parameters(self) -> None:
        """A no-op kept for torch code: rnnkit's weights are always laid out for speed."""

    @property
    def _directions(self) -> int:
        return 2 if self.bidirectional else 1

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity={self.nonlinearity!r}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.dtype != np.float32:
            s += ", dtype=float64"
        return s

    def config(self) -> dict:
        """The constructor arguments that rebuild this layer (used by ``rnnkit.save``)."""
        cfg = {"input_size": self.input_size, "hidden_size": self.hidden_size,
               "num_layers": self.num_layers, "bias": self.bias,
               "batch_first": self.batch_first, "dropout": self.dropout,
               "bidirectional": self.bidirectional, "dtype": self.dtype.name}
        if self.mode == "LSTM":
            cfg["proj_size"] = self.proj_size
        if self.mode.startswith("RNN"):
            cfg["nonlinearity"] = self.nonlinearity
        return cfg

    # ------------------------------------------------------------ forward

    def _flat_weights(self) -> list:
        """The weights in ``stacked_layers``' order: per layer-direction ``weight_ih``,
        ``weight_hh``, then ``bias_ih``, ``bias_hh`` (with bias), then ``weight_hr`` (with
        projection). Traced values while differentiating; otherwise plain ndarray views,
        cached until a parameter is replaced (in-place updates show through the views)."""
        if self._traced:
            return [self._param(name) for name in self._flat_names()]
        key = tuple(map(id, self._parameters.values()))
        if self.__dict__.get("_plain_key") != key:
            self._plain_flat = [np.asarray(self._parameters[name]) for name in self._flat_names()]
            self._plain_key = key
        return self._plain_flat

    def _flat_names(self) -> list[str]:
        kinds = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if self.bias else []) \
            + (["weight_hr"] if self.proj_size else [])
        return [f"{kind}_l{layer}" + ("_reverse" if direction else "")
                for layer in range(self.num_layers) for direction in range(self._directions)
                for kind in kinds]

    def _check_input(self, input):
        """Returns ``(x (L, N, H_in) time-major, batch_sizes, sorted, unsorted, unbatched)``."""
        if isinstance(input, PackedSequence):
            data = input.data
            _check_array("input.data", data, self.dtype)
            if getval(data).ndim != 2:
                raise ValueError(
                    "a PackedSequence input must have data of shape (sum(lengths), "
                    f"input_size) = (total, {self.input_size}), got {getval(data).shape}"
                )
            if getval(data).shape[1] != self.input_size:
                raise ValueError(
                    f"input.data must have shape (sum(lengths), input_size) = "
                    f"({getval(data).shape[0]}, {self.input_size}), got {getval(data).shape}"
                )
            batch_sizes = input.batch_sizes
            x = _packed_to_padded(data, batch_sizes)  # (L, N, H_in), sorted batch order
            return x, batch_sizes, input.sorted_indices, input.unsorted_indices, False
        array = _check_array("input", input, self.dtype)
        layout = "(batch, seq_len, input_size)" if self.batch_first else \
            "(seq_len, batch, input_size)"
        if array.ndim not in (2, 3):
            raise ValueError(
                f"input must be 3-D {layout} or 2-D unbatched (seq_len, input_size), got "
                f"{array.ndim}-D shape {array.shape}"
            )
        if array.shape[-1] != self.input_size:
            expected = array.shape[:-1] + (self.input_size,)
            spelled = layout if array.ndim == 3 else "(seq_len, input_size)"
            raise ValueError(
                f"input must have shape {spelled} = {expected}, got {array.shape}: "
                f"its last axis must be input_size = {self.input_size}"
            )
        unbatched = array.ndim == 2
        if unbatched:
            x = input[:, None, :]  # (L, 1, H_in)
        elif self.batch_first:
            x = input.transpose((1, 0, 2))  # (N, L, H_in) -> (L, N, H_in)
        else:
            x = input
        if getval(x).shape[0] == 0:
            raise ValueError(f"input must hold at least one step, got shape {array.shape}")
        return x, None, None, None, unbatched

    def _check_state(self, name, state, N, H, unbatched, spelled_size):
        D = self._directions
        array = _check_array(name, state, self.dtype)
        if unbatched:
            if array.ndim != 2:
                raise ValueError(
                    f"for unbatched 2-D input, {name} must be 2-D (num_layers*num_directions, "
                    f"{spelled_size}) = {(self.num_layers * D, H)}, got {array.ndim}-D shape "
                    f"{array.shape}"
                )
            _expect_shape(name, array, (self.num_layers * D, H),
                          f"(num_layers*num_directions, {spelled_size})")
            return state[:, None, :]
        if array.ndim != 3:
            raise ValueError(
                f"for batched 3-D input, {name} must be 3-D (num_layers*num_directions, batch, "
                f"{spelled_size}) = {(self.num_layers * D, N, H)}, got {array.ndim}-D shape "
                f"{array.shape}"
            )
        expected = (self.num_layers * D, N, H)
        hint = ""
        if array.shape == (N, self.num_layers * D, H) and array.shape != expected:
            hint = (f"; states are never batch-first, even with batch_first=True: pass "
                    f"{name}.transpose(1, 0, 2)")
        elif array.shape[0] == expected[0] and array.shape[2] == H and array.shape[1] != N:
            hint = f"; its batch ({array.shape[1]}) must equal the input's batch ({N})"
        _expect_shape(name, array, expected,
                      f"(num_layers*num_directions, batch, {spelled_size})", hint)
        return state

    def forward(self, input, hx=None):
        x, batch_sizes, sorted_indices, unsorted_indices, unbatched = self._check_input(input)
        L, N, _ = getval(x).shape
        D = self._directions
        H_out = self.proj_size or self.hidden_size
        is_lstm = self.mode == "LSTM"
        if hx is None:
            h_0 = np.zeros((self.num_layers * D, N, H_out), dtype=self.dtype)
            c_0 = np.zeros((self.num_layers * D, N, self.hidden_size), dtype=self.dtype)
        else:
            if is_lstm:
                if not isinstance(getval(hx), (tuple, list)) or len(getval(hx)) != 2:
                    raise TypeError(
                        "hx must be a tuple (h_0, c_0) for the LSTM, got "
                        f"{type(getval(hx)).__name__}"
                    )
                h_0, c_0 = hx[0], hx[1]
            else:
                if isinstance(getval(hx), (tuple, list)):
                    raise TypeError(f"hx must be one array h_0 for the {self.mode[:3]}, got a "
                                    f"{type(getval(hx)).__name__}")
                h_0, c_0 = hx, None
            h_size = "proj_size" if self.proj_size else "hidden_size"
            h_0 = self._check_state("h_0", h_0, N, H_out, unbatched, h_size)
            if is_lstm:
                c_0 = self._check_state("c_0", c_0, N, self.hidden_size, unbatched,
                                        "hidden_size")
            if sorted_indices is not None:  # states come in the caller's batch order
                h_0 = h_0[:, sorted_indices]
                c_0 = c_0[:, sorted_indices] if is_lstm else None
        nonlinearity = "relu" if self.mode == "RNN_RELU" else "tanh"
        mode = "RNN" if self.mode.startswith("RNN") else self.mode
        # one traced node for the whole stack, or (nothing to differentiate) the
        # inference kernels, which keep no per-step history
        output, h_n, c_n = stacked_layers(
            mode, x, h_0, c_0, self._flat_weights(), self.num_layers, D, self.dropout,
            self.training, nonlinearity, batch_sizes, self.bias, bool(self.proj_size),
        )
        if unsorted_indices is not None:  # back to the caller's batch order
            h_n = h_n[:, unsorted_indices]
            c_n = c_n[:, unsorted_indices] if is_lstm else None
        if batch_sizes is not None:
            output = PackedSequence(_padded_to_packed(output, batch_sizes), batch_sizes,
                                    sorted_indices, unsorted_indices)
        elif unbatched:
            output, h_n = output[:, 0], h_n[:, 0]
            c_n = c_n[:, 0] if is_lstm else None
        elif self.batch_first:
            output = output.transpose((1, 0, 2))
        return (output, (h_n, c_n)) if is_lstm else (output, h_n)


class LSTM(RNNBase):
    r"""Multi-layer long short-term memory, exactly as ``torch.nn.LSTM``.

    For each step t, each layer computes::

        i_t = σ(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)
        f_t = σ(W_if x_t + b_if + W_hf h_{t-1} + b_hf)
        g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)
        o_t = σ(W_io x_t + b_io + W_ho h_{t-1} + b_ho)
        c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
        h_t = o_t ⊙ tanh(c_t)                 (h_t = W_hr h_t when proj_size > 0)

    Layer k > 0 reads the output of layer k - 1, with dropout between them in training.

    Args:
        input_size: H_in, features in each step of ``input``.
        hidden_size: H_cell, features in the cell state (and hidden state, without projection).
        num_layers: LSTMs stacked, each reading the one below. Default: 1
        bias: whether the layers have ``b_ih`` and ``b_hh``. Default: True
        batch_first: ``input`` and ``output`` are ``(N, L, H)`` instead of ``(L, N, H)``;
            the states never are. Default: False
        dropout: probability of zeroing the outputs of every layer but the last. Default: 0
        bidirectional: run a second LSTM from the end of each sequence. Default: False
        proj_size: if > 0, project h_t to this size (H_out = proj_size). Default: 0
        dtype: np.float32 (default) or np.float64.

    Shape:
        input: (L, N, H_in); (N, L, H_in) if ``batch_first``; (L, H_in) unbatched; or a
        PackedSequence. h_0, h_n: (D * num_layers, N, H_out). c_0, c_n:
        (D * num_layers, N, H_cell). output: (L, N, D * H_out), forward direction first.

    Example:
        >>> import numpy as np
        >>> lstm = LSTM(10, 20, 2)
        >>> output, (h_n, c_n) = lstm(np.zeros((5, 3, 10), np.float32))
        >>> output.shape, h_n.shape, c_n.shape
        ((5, 3, 20), (2, 3, 20), (2, 3, 20))

    The step loop in plain NumPy is ``rnnkit._reference.lstm_forward``.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, dtype=None):
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, proj_size, dtype)


def _no_proj_size(kind: str, kwargs: dict) -> None:
    if "proj_size" in kwargs:
        raise ValueError(f"proj_size argument is only supported for LSTM, not {kind}")
    if kwargs:
        raise TypeError(f"{kind}() got an unexpected keyword argument {next(iter(kwargs))!r}")


class GRU(RNNBase):
    r"""Multi-layer gated recurrent unit, exactly as ``torch.nn.GRU``.

    For each step t, each layer computes::

        r_t = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
        z_t = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
        n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t-1} + b_hn))
        h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}

    Args:
        input_size: H_in, features in each step of ``input``.
        hidden_size: H_out, features in the hidden state.
        num_layers: GRUs stacked, each reading the one below. Default: 1
        bias, batch_first, dropout, bidirectional, dtype: as :class:`LSTM`.

    Shape:
        input: (L, N, H_in); (N, L, H_in) if ``batch_first``; (L, H_in) unbatched.
        h_0, h_n: (D * num_layers, N, H_out). output: (L, N, D * H_out).

    Example:
        >>> import numpy as np
        >>> output, h_n = GRU(10, 20, num_layers=2)(np.zeros((5, 3, 10), np.float32))
        >>> output.shape, h_n.shape
        ((5, 3, 20), (2, 3, 20))

    The step loop in plain NumPy is ``rnnkit._reference.gru_forward``.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype=None, **kwargs):
        _no_proj_size("GRU", kwargs)
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, 0, dtype)


class RNN(RNNBase):
    r"""Multi-layer Elman RNN, exactly as ``torch.nn.RNN``::

        h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)     (or relu)

    Args:
        input_size: H_in. hidden_size: H_out. num_layers: RNNs stacked. Default: 1
        nonlinearity: ``'tanh'`` or ``'relu'``. Default: ``'tanh'``
        bias, batch_first, dropout, bidirectional, dtype: as :class:`LSTM`.

    Shape:
        input: (L, N, H_in); (N, L, H_in) if ``batch_first``; (L, H_in) unbatched.
        h_0, h_n: (D * num_layers, N, H_out). output: (L, N, D * H_out).

    Example:
        >>> import numpy as np
        >>> output, h_n = RNN(4, 8, nonlinearity="relu")(np.zeros((5, 4), np.float32))
        >>> output.shape, h_n.shape
        ((5, 8), (1, 8))

    The step loop in plain NumPy is ``rnnkit._reference.rnn_forward``.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, dtype=None, **kwargs):
        _no_proj_size("RNN", kwargs)
        self_nonlinearity = _check_nonlinearity(nonlinearity)
        mode = "RNN_TANH" if self_nonlinearity == "tanh" else "RNN_RELU"
        super().__init__(mode, input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, 0, dtype)
        self.nonlinearity = self_nonlinearity


# ---------------------------------------------------------------- cells


class RNNCellBase(Module):
    """The machinery shared by the cells: parameters, init, input checks."""

    def __init__(self, input_size, hidden_size, bias, num_chunks, dtype):
        super().__init__()
        self.input_size = _positive_int("input_size", input_size, minimum=0)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        self.bias = bool(bias)
        self.dtype = _dtype(dtype)
        k = 1.0 / math.sqrt(self.hidden_size)
        G = num_chunks * self.hidden_size
        shapes = [("weight_ih", (G, self.input_size)), ("weight_hh", (G, self.hidden_size))]
        if self.bias:
            shapes += [("bias_ih", (G,)), ("bias_hh", (G,))]
        for name, shape in shapes:
            value = default_generator().uniform(-k, k, size=shape).astype(self.dtype)
            setattr(self, name, Parameter(value))

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity={self.nonlinearity!r}"
        return s

    def config(self) -> dict:
        cfg = {"input_size": self.input_size, "hidden_size": self.hidden_size,
               "bias": self.bias, "dtype": self.dtype.name}
        if hasattr(self, "nonlinearity"):
            cfg["nonlinearity"] = self.nonlinearity
        return cfg

    def _check_input(self, input):
        """Returns ``(x (1, N, H_in), unbatched)``."""
        array = _check_array("input", input, self.dtype)
        if array.ndim not in (1, 2) or array.shape[-1] != self.input_size:
            raise ValueError(
                "input must have shape (batch, input_size) = (N, "
                f"{self.input_size}) or unbatched (input_size,) = ({self.input_size},), got "
                f"{array.shape}"
            )
        unbatched = array.ndim == 1
        return (input[None, None, :] if unbatched else input[None]), unbatched

    def _check_state(self, name, state, N, unbatched):
        array = _check_array(name, state, self.dtype)
        if unbatched:
            _expect_shape(name, array, (self.hidden_size,), "unbatched (hidden_size,)")
            return state[None]
        _expect_shape(name, array, (N, self.hidden_size), "(batch, hidden_size)")
        return state

    def _zeros(self, N):
        return np.zeros((N, self.hidden_size), dtype=self.dtype)

    def _biases(self):
        if not self.bias:
            return None, None
        return self._param("bias_ih"), self._param("bias_hh")


class LSTMCell(RNNCellBase):
    r"""One LSTM step, exactly as ``torch.nn.LSTMCell``: the equations of :class:`LSTM`.

    Shape:
        input: (N, H_in) or (H_in,). hx = (h, c), each (N, H) or (H,). Returns (h', c').

    Example:
        >>> import numpy as np
        >>> h, c = LSTMCell(10, 20)(np.zeros((3, 10), np.float32))
        >>> h.shape, c.shape
        ((3, 20), (3, 20))
    """

    def __init__(self, input_size, hidden_size, bias=True, dtype=None):
        super().__init__(input_size, hidden_size, bias, 4, dtype)

    def forward(self, input, hx=None):
        x, unbatched = self._check_input(input)
        N = getval(x).shape[1]
        if hx is None:
            h, c = self._zeros(N), self._zeros(N)
        else:
            if not isinstance(getval(hx), (tuple, list)) or len(getval(hx)) != 2:
                raise TypeError(
                    f"hx must be a tuple (h, c) for LSTMCell, got {type(getval(hx)).__name__}"
                )
            h = self._check_state("h", hx[0], N, unbatched)
            c = self._check_state("c", hx[1], N, unbatched)
        b_ih, b_hh = self._biases()
        b = None if b_ih is None else b_ih + b_hh
        _, h, c = lstm_layer(x, h, c, self._param("weight_ih"), self._param("weight_hh"), b,
                             None)
        return (h[0], c[0]) if unbatched else (h, c)


class GRUCell(RNNCellBase):
    r"""One GRU step, exactly as ``torch.nn.GRUCell``: the equations of :class:`GRU`.

    Shape:
        input: (N, H_in) or (H_in,). hx: (N, H) or (H,). Returns h'.

    Example:
        >>> import numpy as np
        >>> GRUCell(10, 20)(np.zeros(10, np.float32)).shape
        (20,)
    """

    def __init__(self, input_size, hidden_size, bias=True, dtype=None):
        super().__init__(input_size, hidden_size, bias, 3, dtype)

    def forward(self, input, hx=None):
        x, unbatched = self._check_input(input)
        N = getval(x).shape[1]
        h = self._zeros(N) if hx is None else self._check_state("hx", hx, N, unbatched)
        b_ih, b_hh = self._biases()
        _, h = gru_layer(x, h, self._param("weight_ih"), self._param("weight_hh"), b_ih, b_hh)
        return h[0] if unbatched else h


class RNNCell(RNNCellBase):
    r"""One Elman RNN step, exactly as ``torch.nn.RNNCell``:
    ``h' = tanh(W_ih x + b_ih + W_hh h + b_hh)`` (or relu).

    Shape:
        input: (N, H_in) or (H_in,). hx: (N, H) or (H,). Returns h'.

    Example:
        >>> import numpy as np
        >>> RNNCell(10, 20, nonlinearity="relu")(np.zeros((3, 10), np.float32)).shape
        (3, 20)
    """

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", dtype=None):
        nonlinearity = _check_nonlinearity(nonlinearity)
        super().__init__(input_size, hidden_size, bias, 1, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input, hx=None):
        x, unbatched = self._check_input(input)
        N = getval(x).shape[1]
        h = self._zeros(N) if hx is None else self._check_state("hx", hx, N, unbatched)
        b_ih, b_hh = self._biases()
        b = None if b_ih is None else b_ih + b_hh
        _, h = rnn_layer(x, h, self._param("weight_ih"), self._param("weight_hh"), b,
                         self.nonlinearity)
        return h[0] if unbatched else h
