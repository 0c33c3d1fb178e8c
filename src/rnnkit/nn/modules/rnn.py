r"""Recurrent layers and cells with torch's arguments, shapes, parameter names and math.

One ``RNNBase.forward`` serves LSTM, GRU and RNN: it checks the input at the
public boundary (every message names the argument, the expected shape in the
vocabulary of torch's docs and what came), packs or pads, and hands the stack to
``_autodiff.stacked_layers``. One ``RNNCellBase.forward`` serves the three cells,
through the same node with one layer and one step. What differs between the
modes (gates, weight order, kernels) is in ``rnnkit._modes``.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import NamedTuple

import numpy as np
from autograd.tracer import getval, isbox

from ... import _ops
from ..._autodiff import ParamsInDict, StackSpec, stacked_layers
from ..._modes import MODES, CellOptions, layer_suffix, option_names, rnn_mode, weight_names
from ..._random import default_generator
from ..._validate import expect_shape, float_array, float_dtype, int_arg
from ..utils.rnn import PackedSequence, _packed_to_padded, _padded_to_packed
from . import _lengths
from .module import Module, Parameter, _structure
from .stream import Stream, stream_of

__all__ = ["RNNBase", "LSTM", "GRU", "RNN", "RNNCellBase", "LSTMCell", "GRUCell", "RNNCell"]


def _refuse_proj_size(kind: str) -> None:
    raise ValueError(f"proj_size argument is only supported for LSTM, not {kind}")


def _no_extra_kwargs(kind: str, kwargs: dict) -> None:
    """GRU and RNN take no ``proj_size``, nor any other keyword torch's LSTM has."""
    if "proj_size" in kwargs:
        _refuse_proj_size(kind)
    if kwargs:
        raise TypeError(f"{kind}() got an unexpected keyword argument {next(iter(kwargs))!r}")


def _layer_input_size(value) -> int:
    """torch refuses a layer without input features (its cells accept one)."""
    size = int_arg("input_size", value, minimum=None)
    if size <= 0:
        raise ValueError(f"input_size must be greater than zero, got {size}")
    return size


def _flag(name: str, value) -> bool:
    """A cell option's on/off flag: True or False, nothing else."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")


def _probability(name: str, value) -> float:
    """A cell option's probability, in [0, 1): at 1 nothing would pass (dropout) or nothing
    would change (zoneout)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a probability in [0, 1), got {value!r} "
                        f"({type(value).__name__})")
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be a probability in [0, 1), got {value!r}")
    return float(value)


def _cell_options(mode, layer_norm, recurrent_dropout, zoneout, peepholes) -> CellOptions:
    """The options of API.md "Cell options (beyond torch)", checked; each error names its
    option."""
    options = CellOptions(_flag("layer_norm", layer_norm),
                          _probability("recurrent_dropout", recurrent_dropout),
                          _probability("zoneout", zoneout), _flag("peepholes", peepholes))
    if options.peepholes and mode != "LSTM":
        raise ValueError(f"peepholes=True is only supported for LSTM, not {mode[:3]}: "
                         "peepholes read the LSTM's cell state, which the "
                         f"{mode[:3]} has none of")
    return options


def _option_parameter(name, G, hidden_size, dtype) -> Parameter:
    """API.md's init of an option parameter: layer norm's gains γ at 1 and β_c at 0,
    peepholes U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)) as the weights."""
    if name in ("weight_ln_ih", "weight_ln_hh"):
        return Parameter(np.ones(G, dtype))
    if name == "weight_ln_c":
        return Parameter(np.ones(hidden_size, dtype))
    if name == "bias_ln_c":
        return Parameter(np.zeros(hidden_size, dtype))
    return _init((3 * hidden_size,), hidden_size, dtype)  # weight_ph: p_i | p_f | p_o


def _init(shape, hidden_size, dtype) -> Parameter:
    """torch's init of every recurrent weight: U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))."""
    k = 1.0 / math.sqrt(hidden_size)
    return Parameter(default_generator().uniform(-k, k, size=shape).astype(dtype))


class _StackModule(Module):
    """A module whose forward is one ``stacked_layers`` call (the layers and the cells);
    each lists its parameter names in flat order in ``_flat_names``.

    Its parameters are made as views into one flat buffer, in that order (torch's
    "flat weights"): a small call hands the buffer to the compiled stack as it is, with
    no copy, and in-place updates (optimizers, ``load_state_dict``) show through. A
    parameter replaced by another array leaves the buffer behind; calls then copy.
    """

    def _adopt_flat_buffer(self) -> None:
        """Move the parameters, just made, into one buffer (called by ``__init__``, before
        anyone can hold a parameter)."""
        self._flat_weights_names = self._flat_names()  # torch's name; fixed from here on
        params = [self._parameters[name] for name in self._flat_weights_names]
        buffer = np.concatenate(params, axis=None)
        offset = 0
        for name, p in zip(self._flat_weights_names, params, strict=True):
            view = np.ndarray.__new__(Parameter, p.shape, buffer.dtype, buffer=buffer,
                                      offset=offset * buffer.itemsize)  # base: buffer
            self._parameters[name] = view
            offset += p.size
        object.__setattr__(self, "_buffer", buffer)

    def __getstate__(self):
        # a copy's parameters are arrays of their own: it leaves the buffer, the views
        # of the parameters and the compiled stack (whose micro-kernel address is this
        # process's) behind
        state = super().__getstate__()
        for key in ("_buffer", "_small", "_small_known", "_plain_flat", "_plain_key", "_plans"):
            state.pop(key, None)
        return state

    def _small_stack(self):
        """The compiled stack of small calls over the flat buffer (made once), while every
        parameter still lives in the buffer; else None, and None for a layer with cell
        options (their kernels are apart). Which of the two is known until a parameter is
        replaced (``module._structure``)."""
        known = self.__dict__.get("_small_known")
        if known is not None and known[0] == _structure[0]:
            return known[1]
        buffer, stack = self.__dict__.get("_buffer"), None
        options = self._options if isinstance(self, RNNBase) else None
        if buffer is not None and not (options and options.any) and all(
                p is not None and p.base is buffer
                                      for p in self._parameters.values()):
            stack = self.__dict__.get("_small")
            if stack is None:
                cells = isinstance(self, RNNCellBase)
                stack = _ops.SmallStack(self.mode, self._plain_weights(),
                                        1 if cells else self.num_layers,
                                        1 if cells else self._directions, self.bias,
                                        False if cells else bool(self.proj_size), buffer)
                object.__setattr__(self, "_small", stack)
        object.__setattr__(self, "_small_known", (_structure[0], stack))
        return stack

    def _stack_weights(self):
        """What ``stacked_layers`` reads the weights from: while tracing, when every weight
        is a parameter of the one traced dict, that dict and their keys (``ParamsInDict``:
        one graph node for the stack, none per weight); else ``_flat_weights()``."""
        traced = self._traced
        if traced is not None and traced.flat_keys is not None:
            return ParamsInDict(traced.box, traced.flat_keys)
        return self._flat_weights()

    def _flat_weights(self) -> list:
        """The weights in ``stacked_layers``' order (``rnnkit._modes.weight_names`` per
        layer-direction). Traced values while differentiating; otherwise plain ndarray views,
        cached until a parameter is replaced (in-place updates show through the views)."""
        if self._traced is not None:
            return [self._param(name) for name in self._flat_weights_names]
        return self._plain_weights()

    def _plain_weights(self) -> list:
        """The weights in flat order as plain ndarray views of the parameters (never traced
        values), cached until a parameter is replaced."""
        key = tuple(map(id, self._parameters.values()))
        if self.__dict__.get("_plain_key") != key:
            self._plain_flat = [np.asarray(self._parameters[name])
                                for name in self._flat_weights_names]
            self._plain_key = key
        return self._plain_flat


    # ------------------------------------------------------------ calls, planned once
    # A call on plain arrays (no lengths) is checked, and its route chosen, once per
    # (shapes, dtypes, flags); later calls with the same key go straight to it: a small
    # call to the compiled stack, a traced call (value_and_grad tracing the parameters)
    # to the stack's autograd node, each on zero initial states made once (read, never
    # written).

    def _planned(self, input, hx):
        """The ``_Plan`` of this call, or None when it takes the general route; every
        check of the general route has run when the plan was made."""
        if type(input) is not np.ndarray:
            return None
        traced = self._traced is not None
        if hx is None:
            states = None
        elif traced:  # traced states: the general route
            return None
        elif MODES[self.mode].cell_state:
            if (type(hx) is not tuple or len(hx) != 2 or type(hx[0]) is not np.ndarray
                    or type(hx[1]) is not np.ndarray):
                return None
            states = (hx[0].shape, hx[0].dtype, hx[1].shape, hx[1].dtype)
        elif type(hx) is np.ndarray:
            states = (hx.shape, hx.dtype)
        else:
            return None
        key = (input.shape, input.dtype, states, traced, self.training, _structure[0]) + \
            self._plan_flags()
        plans = self.__dict__.get("_plans")
        if plans is None:
            plans = {}
            object.__setattr__(self, "_plans", plans)
        plan = plans.get(key)
        if plan is None:
            plan = self._plan(input, hx, traced)
            if len(plans) >= 64:  # shapes come and go: keep the recent ones
                plans.clear()
            plans[key] = plan
        return plan or None


class _Plan(NamedTuple):
    """A planned call: the compiled small stack (None: a traced call, which runs
    ``stacked_layers`` with ``spec``), the stack's spec, and the zero initial states
    (None: given)."""

    stack: object
    spec: object
    h_0: object
    c_0: object


class RNNBase(_StackModule):
    """The machinery shared by :class:`LSTM`, :class:`GRU` and :class:`RNN`."""

    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, proj_size=0,
                 dtype=None, *, layer_norm=False, recurrent_dropout=0.0, zoneout=0.0,
                 peepholes=False):
        super().__init__()
        self.mode = mode
        options = _cell_options(mode, layer_norm, recurrent_dropout, zoneout, peepholes)
        self.layer_norm, self.recurrent_dropout = options.layer_norm, options.recurrent_dropout
        self.zoneout, self.peepholes = options.zoneout, options.peepholes
        self.input_size = _layer_input_size(input_size)
        self.hidden_size = int_arg("hidden_size", hidden_size, minimum=1)
        self.num_layers = int_arg("num_layers", num_layers, minimum=1)
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
        int_arg("proj_size", proj_size, minimum=None)
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
            _refuse_proj_size(mode[:3])
        self.proj_size = int(proj_size)
        self.dtype = float_dtype(dtype)

        D = self._directions
        G = MODES[mode].gates * self.hidden_size
        H_out = self.proj_size or self.hidden_size
        for layer in range(self.num_layers):
            shapes = {"weight_ih": (G, self.input_size if layer == 0 else H_out * D),
                      "weight_hh": (G, H_out), "bias_ih": (G,), "bias_hh": (G,),
                      "weight_hr": (self.proj_size, self.hidden_size)}
            for direction in range(D):
                for kind in weight_names(self.bias, bool(self.proj_size)):
                    setattr(self, kind + layer_suffix(layer, direction),
                            _init(shapes[kind], self.hidden_size, self.dtype))
        # the options' parameters after all of torch's (whose draws, and state_dict
        # order, they leave as a plain layer's)
        for layer in range(self.num_layers):
            for direction in range(D):
                for kind in option_names(MODES[mode].cell_state, options):
                    setattr(self, kind + layer_suffix(layer, direction),
                            _option_parameter(kind, G, self.hidden_size, self.dtype))
        self._adopt_flat_buffer()

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

    @property
    def _options(self) -> CellOptions:
        return CellOptions(self.layer_norm, self.recurrent_dropout, self.zoneout,
                           self.peepholes)

    def _options_repr(self) -> str:
        """The options that are set, as a call would spell them: ``, zoneout=0.25``."""
        s = ", layer_norm=True" if self.layer_norm else ""
        if self.recurrent_dropout:
            s += f", recurrent_dropout={self.recurrent_dropout}"
        if self.zoneout:
            s += f", zoneout={self.zoneout}"
        return s + (", peepholes=True" if self.peepholes else "")

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
        return s + self._options_repr()

    def config(self) -> dict:
        """The constructor arguments that rebuild this layer (used by ``rnnkit.save``); the
        cell options only when set, so a plain layer's config is what it always was."""
        cfg = {"input_size": self.input_size, "hidden_size": self.hidden_size,
               "num_layers": self.num_layers, "bias": self.bias,
               "batch_first": self.batch_first, "dropout": self.dropout,
               "bidirectional": self.bidirectional, "dtype": self.dtype.name}
        if self.mode == "LSTM":
            cfg["proj_size"] = self.proj_size
        if MODES[self.mode].nonlinearity:
            cfg["nonlinearity"] = self.nonlinearity
        options = self._options
        for name, default in zip(options._fields, CellOptions(), strict=True):
            if getattr(options, name) != default:
                cfg[name] = getattr(options, name)
        return cfg

    # ------------------------------------------------------------ forward

    def _flat_names(self) -> list[str]:
        kinds = weight_names(self.bias, bool(self.proj_size)) + option_names(
            MODES[self.mode].cell_state, self._options)
        return [kind + layer_suffix(layer, direction)
                for layer in range(self.num_layers) for direction in range(self._directions)
                for kind in kinds]

    def _check_input(self, input):
        """Returns ``(x (L, N, H_in) time-major, batch_sizes, sorted, unsorted, unbatched)``."""
        if (type(input) is np.ndarray and input.ndim == 3 and input.dtype == self.dtype
                and input.shape[2] == self.input_size and input.shape[0] > 0
                and input.shape[1] > 0):  # the common call, in a few checks
            return (input.transpose((1, 0, 2)) if self.batch_first else input,
                    None, None, None, False)
        if isinstance(input, PackedSequence):
            data = input.data
            float_array("input.data", data, self.dtype)
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
        array = float_array("input", input, self.dtype)
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
        array = float_array(name, state, self.dtype)
        if unbatched:
            if array.ndim != 2:
                raise ValueError(
                    f"for unbatched 2-D input, {name} must be 2-D (num_layers*num_directions, "
                    f"{spelled_size}) = {(self.num_layers * D, H)}, got {array.ndim}-D shape "
                    f"{array.shape}"
                )
            expect_shape(name, array, (self.num_layers * D, H),
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
        expect_shape(name, array, expected,
                      f"(num_layers*num_directions, batch, {spelled_size})", hint)
        return state

    def _check_lengths(self, input, lengths, padding_side):
        """``lengths=`` / ``padding_side=`` of a call: the run :class:`_lengths.Layout`, or
        None for a call without lengths."""
        if padding_side != "right" and padding_side != "left":
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if lengths is None:
            if padding_side == "left":
                raise ValueError(
                    "padding_side='left' needs lengths=: it says where each sequence's "
                    "real steps are; without lengths every sequence fills all seq_len steps"
                )
            return None
        if isinstance(input, PackedSequence):
            raise ValueError(
                "lengths= takes a padded array input, got a PackedSequence, which carries "
                "its lengths already (in batch_sizes): pass the padded array with lengths=, "
                "or the PackedSequence alone"
            )
        shape = getval(input).shape
        if len(shape) != 3:
            raise ValueError(
                "lengths= needs a batched 3-D input "
                + ("(batch, seq_len, input_size)" if self.batch_first
                   else "(seq_len, batch, input_size)")
                + f", got {len(shape)}-D shape {shape}: one unbatched sequence has one "
                "length, its seq_len; slice it to its real steps instead"
            )
        L, N = (shape[1], shape[0]) if self.batch_first else shape[:2]
        return _lengths.layout(lengths, N, L, padding_side == "left")

    def _plan_flags(self) -> tuple:
        return (self.dropout, self.batch_first)

    def _plan(self, input, hx, traced):
        """The ``_Plan`` of a small call on plain arrays, or of a traced call (``hx`` None),
        after the general route's checks (which raise its errors); False when the call
        needs the general route."""
        x, _, _, _, unbatched = self._check_input(input)
        if unbatched:
            return False
        L, N, _ = x.shape
        D, H_out = self._directions, self.proj_size or self.hidden_size
        cell_state = MODES[self.mode].cell_state
        if hx is not None:
            h_size = "proj_size" if self.proj_size else "hidden_size"
            self._check_state("h_0", hx[0] if cell_state else hx, N, H_out, False, h_size)
            if cell_state:
                self._check_state("c_0", hx[1], N, self.hidden_size, False, "hidden_size")
        zeros = (None, None) if hx is not None else (
            np.zeros((self.num_layers * D, N, H_out), self.dtype),
            np.zeros((self.num_layers * D, N, self.hidden_size), self.dtype)
            if cell_state else None)
        spec = self._spec(None)
        if traced:
            return _Plan(None, spec, *zeros)
        stack = self._small_stack()
        if stack is None or not spec.one_call(x, self.hidden_size, H_out):
            return False
        return _Plan(stack, spec, *zeros)

    def _spec(self, batch_sizes) -> StackSpec:
        return StackSpec(self.mode, self.num_layers, self._directions, self.dropout,
                         self.training, batch_sizes, self.bias, bool(self.proj_size),
                         self._options)

    def forward(self, input, hx=None, *, lengths=None, padding_side="right"):
        r"""``output, h_n`` (the LSTM: ``output, (h_n, c_n)``), as torch's call.

        Args:
            input: ``(L, N, H_in)``, ``(N, L, H_in)`` if ``batch_first``, unbatched
                ``(L, H_in)``, or a ``PackedSequence``.
            hx: ``h_0`` (the LSTM: ``(h_0, c_0)``), each ``(D * num_layers, N, H)``.
                Default: zeros.
            lengths: beyond torch: the real steps of each sequence of a padded batch
                (N ints, ``0 <= lengths[b] <= L``): the result of packing with
                ``enforce_sorted=False``, the call and padding back to ``L`` steps, in
                one call; a sequence of length 0 outputs zeros and keeps ``h_0``.
            padding_side: with ``lengths``, ``'right'`` (real steps first) or ``'left'``
                (real steps last, as ``pad_sequence(..., padding_side='left')`` makes);
                the output keeps the input's layout.

        Example:
            >>> import numpy as np
            >>> gru = GRU(2, 3)
            >>> output, h_n = gru(np.ones((4, 2, 2), np.float32), lengths=[4, 1])
            >>> bool(output[1:, 1].any()), output.shape
            (False, (4, 2, 3))
        """
        plan = self._planned(input, hx) if lengths is None and padding_side == "right" \
            else None
        if plan is not None:  # a call on plain arrays, checked when planned
            stack, spec, h_0, c_0 = plan
            cell_state = MODES[self.mode].cell_state
            if h_0 is None:
                h_0, c_0 = hx if cell_state else (hx, None)
            x = input.transpose((1, 0, 2)) if self.batch_first else input
            if stack is not None:
                output, h_n, c_n = stack.run(x, h_0, c_0, None)
            else:  # traced: the stack's node
                output, h_n, c_n = stacked_layers(spec, x, h_0, c_0, self._stack_weights(),
                                                  self._small_stack)
            if self.batch_first:
                output = output.transpose((1, 0, 2))
            return (output, (h_n, c_n)) if cell_state else (output, h_n)
        x, batch_sizes, sorted_indices, unsorted_indices, unbatched = self._check_input(input)
        run = self._check_lengths(input, lengths, padding_side)
        L, N, _ = getval(x).shape
        if run is not None:  # lengths=: the packed layout, made by one gather
            batch_sizes = run.batch_sizes
            sorted_indices, unsorted_indices = run.sorted_indices, run.unsorted_indices
            x = _lengths.to_run(input, run, self.batch_first)  # (L_run, N, H_in)
        D = self._directions
        H_out = self.proj_size or self.hidden_size
        cell_state = MODES[self.mode].cell_state  # the LSTM: hx = (h_0, c_0)
        if hx is None:
            h_0 = np.zeros((self.num_layers * D, N, H_out), dtype=self.dtype)
            c_0 = np.zeros((self.num_layers * D, N, self.hidden_size), dtype=self.dtype)
        else:
            if cell_state:
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
            if cell_state:
                c_0 = self._check_state("c_0", c_0, N, self.hidden_size, unbatched,
                                        "hidden_size")
            if sorted_indices is not None:  # states come in the caller's batch order
                h_0 = h_0[:, sorted_indices]
                c_0 = c_0[:, sorted_indices] if cell_state else None
        if run is not None and run.batch_sizes.size == 0:  # every length is 0 (none sorted)
            return self._nothing_runs(run, h_0, c_0, D * H_out)
        # one traced node for the whole stack, or (nothing to differentiate) the
        # inference kernels, which keep no per-step history
        spec = self._spec(batch_sizes)
        output, h_n, c_n = stacked_layers(spec, x, h_0, c_0, self._stack_weights(),
                                          self._small_stack)
        if unsorted_indices is not None:  # back to the caller's batch order
            h_n = h_n[:, unsorted_indices]
            c_n = c_n[:, unsorted_indices] if cell_state else None
        if run is not None:
            output = _lengths.from_run(output, run, self.batch_first)
        elif batch_sizes is not None:
            output = PackedSequence(_padded_to_packed(output, batch_sizes), batch_sizes,
                                    sorted_indices, unsorted_indices)
        elif unbatched:
            output, h_n = output[:, 0], h_n[:, 0]
            c_n = c_n[:, 0] if cell_state else None
        elif self.batch_first:
            output = output.transpose((1, 0, 2))
        return (output, (h_n, c_n)) if cell_state else (output, h_n)

    def stream(self, batch_size: int | None = None, hx=None) -> Stream:
        r"""A :class:`Stream` over this layer: stateful inference, one chunk at a time.

        The stream keeps ``h`` (and the LSTM's ``c``) between its calls, so that consecutive
        chunks give what one call on their concatenation gives. It uses the weights as they
        are now, with no dropout and no gradients. A bidirectional layer cannot stream.

        Args:
            batch_size: N, the sequences streamed together (default: h_0's batch, or 1).
            hx: the initial state, as in a call: ``h_0`` (``(h_0, c_0)`` for the LSTM),
                each ``(num_layers, N, H)``. Default: zeros.

        Example:
            >>> import numpy as np
            >>> gru = GRU(4, 8)
            >>> x = np.ones((6, 2, 4), np.float32)
            >>> stream = gru.stream(batch_size=2)
            >>> parts = [stream(x[:2]), stream(x[2:5]), stream(x[5])[None]]
            >>> bool(np.allclose(np.concatenate(parts), gru(x)[0], rtol=1e-6, atol=1e-7))
            True
        """
        return stream_of(self, batch_size, hx)

    def _nothing_runs(self, run, h_0, c_0, width):
        """A ``lengths=`` call whose lengths are all 0: zero output, ``h_n, c_n = h_0, c_0``
        (copies of untraced arrays, so that the result never aliases the caller's)."""
        L, N = run.scatter_t.shape
        output = np.zeros((N, L, width) if self.batch_first else (L, N, width), self.dtype)
        h_n = h_0 if isbox(h_0) else np.array(h_0)
        if not MODES[self.mode].cell_state:
            return output, h_n
        return output, (h_n, c_0 if isbox(c_0) else np.array(c_0))


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

    Cell options beyond torch (keyword only; API.md "Cell options", docs/equations.md):
        layer_norm: normalize both projections over the gate vector, and c_t before its
            tanh (parameters ``weight_ln_ih/hh_l{k}``, ``weight_ln_c_l{k}``,
            ``bias_ln_c_l{k}``). Default: False
        recurrent_dropout: in training, drop h_{t-1} where W_hh reads it, one mask per
            call and layer-direction. Default: 0
        zoneout: in training, keep each unit of h_{t-1} with this probability; in eval,
            ``h_t = p h_{t-1} + (1 - p) h̃_t``. Default: 0
        peepholes: ``c`` feeds i, f (c_{t-1}) and o (c_t) through ``weight_ph_l{k}``
            ``(3*H_cell,)``, ONNX's P. Default: False

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
                 dropout=0.0, bidirectional=False, proj_size=0, dtype=None, *,
                 layer_norm=False, recurrent_dropout=0.0, zoneout=0.0, peepholes=False):
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, proj_size, dtype, layer_norm=layer_norm,
                         recurrent_dropout=recurrent_dropout, zoneout=zoneout,
                         peepholes=peepholes)


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
        layer_norm, recurrent_dropout, zoneout: as :class:`LSTM` (no peepholes).

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
                 dropout=0.0, bidirectional=False, dtype=None, *, layer_norm=False,
                 recurrent_dropout=0.0, zoneout=0.0, peepholes=False, **kwargs):
        _no_extra_kwargs("GRU", kwargs)
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, 0, dtype, layer_norm=layer_norm,
                         recurrent_dropout=recurrent_dropout, zoneout=zoneout,
                         peepholes=peepholes)


class RNN(RNNBase):
    r"""Multi-layer Elman RNN, exactly as ``torch.nn.RNN``::

        h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)     (or relu)

    Args:
        input_size: H_in. hidden_size: H_out. num_layers: RNNs stacked. Default: 1
        nonlinearity: ``'tanh'`` or ``'relu'``. Default: ``'tanh'``
        bias, batch_first, dropout, bidirectional, dtype: as :class:`LSTM`.
        layer_norm, recurrent_dropout, zoneout: as :class:`LSTM` (no peepholes).

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
                 batch_first=False, dropout=0.0, bidirectional=False, dtype=None, *,
                 layer_norm=False, recurrent_dropout=0.0, zoneout=0.0, peepholes=False,
                 **kwargs):
        _no_extra_kwargs("RNN", kwargs)
        mode = rnn_mode(nonlinearity)
        super().__init__(mode, input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, 0, dtype, layer_norm=layer_norm,
                         recurrent_dropout=recurrent_dropout, zoneout=zoneout,
                         peepholes=peepholes)
        self.nonlinearity = MODES[mode].nonlinearity


# ---------------------------------------------------------------- cells


class RNNCellBase(_StackModule):
    """The machinery shared by the cells: parameters, init, input checks, and one forward:
    a cell is its layer's stack node with one layer, one direction and one step."""

    def __init__(self, mode, input_size, hidden_size, bias, dtype):
        super().__init__()
        self.mode = mode
        self.input_size = int_arg("input_size", input_size, minimum=0)  # torch accepts 0 here
        self.hidden_size = int_arg("hidden_size", hidden_size, minimum=1)
        self.bias = bool(bias)
        self.dtype = float_dtype(dtype)
        G = MODES[mode].gates * self.hidden_size
        shapes = {"weight_ih": (G, self.input_size), "weight_hh": (G, self.hidden_size),
                  "bias_ih": (G,), "bias_hh": (G,)}
        for name in weight_names(self.bias, False):
            setattr(self, name, _init(shapes[name], self.hidden_size, self.dtype))
        self._adopt_flat_buffer()

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if MODES[self.mode].nonlinearity not in (None, "tanh"):
            s += f", nonlinearity={self.nonlinearity!r}"
        return s

    def config(self) -> dict:
        cfg = {"input_size": self.input_size, "hidden_size": self.hidden_size,
               "bias": self.bias, "dtype": self.dtype.name}
        if MODES[self.mode].nonlinearity:
            cfg["nonlinearity"] = self.nonlinearity
        return cfg

    def _flat_names(self) -> list[str]:
        return list(weight_names(self.bias, False))

    def _check_input(self, input):
        """Returns ``(x (1, N, H_in), unbatched)``."""
        array = float_array("input", input, self.dtype)
        if array.ndim not in (1, 2) or array.shape[-1] != self.input_size:
            raise ValueError(
                "input must have shape (batch, input_size) = (N, "
                f"{self.input_size}) or unbatched (input_size,) = ({self.input_size},), got "
                f"{array.shape}"
            )
        unbatched = array.ndim == 1
        return (input[None, None, :] if unbatched else input[None]), unbatched

    def _check_state(self, name, state, N, unbatched):
        """``state`` as ``(N, H)``."""
        array = float_array(name, state, self.dtype)
        if unbatched:
            expect_shape(name, array, (self.hidden_size,), "unbatched (hidden_size,)")
            return state[None]
        expect_shape(name, array, (N, self.hidden_size), "(batch, hidden_size)")
        return state

    def _states(self, hx, N, unbatched):
        """``(h, c)``, each ``(N, H)`` (``c`` None but for the LSTMCell); zeros for None."""
        cell_state = MODES[self.mode].cell_state
        if hx is None:
            shape = (N, self.hidden_size)
            return np.zeros(shape, self.dtype), (np.zeros(shape, self.dtype) if cell_state
                                                 else None)
        if not cell_state:
            return self._check_state("hx", hx, N, unbatched), None
        if not isinstance(getval(hx), (tuple, list)) or len(getval(hx)) != 2:
            raise TypeError(
                f"hx must be a tuple (h, c) for LSTMCell, got {type(getval(hx)).__name__}"
            )
        return (self._check_state("h", hx[0], N, unbatched),
                self._check_state("c", hx[1], N, unbatched))

    def _plan_flags(self) -> tuple:
        return ()

    def _plan(self, input, hx, traced):
        """The ``_Plan`` of a small step on plain arrays (zero states when ``hx`` is None),
        after the general route's checks; False when it needs the general route (a traced
        step among them)."""
        x, unbatched = self._check_input(input)
        if unbatched or traced:
            return False
        N = x.shape[1]
        self._states(hx, N, False)  # checks
        stack, spec = self._small_stack(), self._spec()
        if stack is None or not spec.one_call(x, self.hidden_size, self.hidden_size):
            return False
        if hx is not None:
            return _Plan(stack, spec, None, None)
        zeros = np.zeros((N, self.hidden_size), self.dtype)
        return _Plan(stack, spec, zeros, zeros if MODES[self.mode].cell_state else None)

    def _spec(self) -> StackSpec:
        return StackSpec(self.mode, 1, 1, 0.0, False, None, self.bias, False)

    def forward(self, input, hx=None):
        plan = self._planned(input, hx)
        if plan is not None:  # a small step on plain arrays, checked when planned
            stack, _, h, c = plan
            cell_state = MODES[self.mode].cell_state
            if h is None:
                h, c = hx if cell_state else (hx, None)
            _, h, c = stack.run(input[None], h[None], c[None] if cell_state else None, None)
            return (h[0], c[0]) if cell_state else h[0]
        x, unbatched = self._check_input(input)
        h, c = self._states(hx, getval(x).shape[1], unbatched)
        _, h, c = stacked_layers(self._spec(), x, h, c, self._stack_weights(),  # (N, H)
                                 self._small_stack)
        if unbatched:
            h, c = h[0], (None if c is None else c[0])
        return h if c is None else (h, c)


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
        super().__init__("LSTM", input_size, hidden_size, bias, dtype)


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
        super().__init__("GRU", input_size, hidden_size, bias, dtype)


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
        mode = rnn_mode(nonlinearity)
        super().__init__(mode, input_size, hidden_size, bias, dtype)
        self.nonlinearity = MODES[mode].nonlinearity
