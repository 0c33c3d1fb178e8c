"""Print every shape of a recurrent layer configuration, and what each axis means.

The shapes are computed, not recited: the layer is built and run on zeros.

Example:
    rnnkit explain lstm --input-size 10 --hidden-size 20 --num-layers 2 --seq-len 5 --batch 3
    rnnkit explain gru --seq-len 5 --batch 3 --lengths 5,0,2 --padding-side left
    rnnkit explain lstm --layer-norm --zoneout 0.1 --peepholes   # cell options (beyond torch)
"""

from __future__ import annotations

import argparse

from ._argtypes import fraction as _fraction
from ._argtypes import positive_int as _positive

_EQUATIONS = {
    "lstm": [
        "i_t = σ(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)",
        "f_t = σ(W_if x_t + b_if + W_hf h_{t-1} + b_hf)",
        "g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)",
        "o_t = σ(W_io x_t + b_io + W_ho h_{t-1} + b_ho)",
        "c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t",
        "h_t = o_t ⊙ tanh(c_t)",
    ],
    "gru": [
        "r_t = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)",
        "z_t = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)",
        "n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t-1} + b_hn))",
        "h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}",
    ],
    "rnn": ["h_t = ACT(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)"],
}
_ROWS = {"lstm": "rows i|f|g|o", "gru": "rows r|z|n", "rnn": "one block"}
# what each parameter is, by the start of its name ({rows}: the mode's gate rows)
_MEANINGS = (
    ("weight_ih", "W_ih, {rows}; multiplies x_t (or the layer below's output)"),
    ("weight_hh", "W_hh, {rows}; multiplies h_(t-1)"),
    ("weight_hr", "W_hr, projects h_t from hidden_size to proj_size"),
    ("weight_ln_ih", "γ_ih, {rows}; layer-norm gain of W_ih x_t (init 1)"),
    ("weight_ln_hh", "γ_hh, {rows}; layer-norm gain of W_hh h_(t-1) (init 1)"),
    ("weight_ln_c", "γ_c, layer-norm gain of c_t (init 1)"),
    ("bias_ln_c", "β_c, layer-norm bias of c_t (init 0)"),
    ("weight_ph", "p_i|p_f|p_o, peepholes from c_(t-1) (i, f) and c_t (o)"),
)
_GATES = {"lstm": "ifgo", "gru": "rzn", "rnn": ""}


def _options_equations(kind: str, layer_norm: bool, dropout: bool, zoneout: bool,
                       peepholes: bool, proj: bool) -> list[str]:
    """The step's equations with the cell options (API.md "Cell options (beyond torch)");
    with every option off, ``_EQUATIONS[kind]`` (and the projection line) exactly."""
    h = "(m ⊙ h_{t-1})" if dropout else "h_{t-1}"  # what W_hh reads
    new_h = "h̃_t" if zoneout else "h_t"  # the step's own new state, before zoneout
    lines = []
    if layer_norm:
        G = {"lstm": "4H", "gru": "3H", "rnn": "H"}[kind]
        if kind == "gru":
            lines += [f"a_t = LN(W_ih x_t) ⊙ γ_ih + b_ih          ({G} entries, {_ROWS[kind]})",
                      f"b_t = LN(W_hh {h}) ⊙ γ_hh + b_hh"]
        elif kind == "lstm":
            lines.append(f"a_t = LN(W_ih x_t) ⊙ γ_ih + b_ih + LN(W_hh {h}) ⊙ γ_hh + b_hh"
                         f"   ({G} entries, {_ROWS[kind]})")

    def pre(gate: str) -> str:  # a gate's pre-activation
        if layer_norm:
            return f"a_{gate}"
        return f"W_i{gate} x_t + b_i{gate} + W_h{gate} {h} + b_h{gate}"

    if kind == "lstm":
        peep = {g: (f" + p_{g} ⊙ c_{{t-1}}" if peepholes else "") for g in "if"}
        gates = [f"i_t = σ({pre('i')}{peep['i']})", f"f_t = σ({pre('f')}{peep['f']})",
                 f"g_t = tanh({pre('g')})"]
        o = f"o_t = σ({pre('o')}" + (" + p_o ⊙ c_t)" if peepholes else ")")
        c = "c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t"
        # with peepholes o_t reads c_t, so it comes after it
        lines += gates + ([c, o] if peepholes else [o, c])
        cell = "LN(c_t) ⊙ γ_c + β_c" if layer_norm else "c_t"
        lines.append(f"{new_h} = o_t ⊙ tanh({cell})")
    elif kind == "gru":
        if layer_norm:
            lines += ["r_t = σ(a_r + b_r)", "z_t = σ(a_z + b_z)", "n_t = tanh(a_n + r_t ⊙ b_n)"]
        else:
            lines += [f"r_t = σ({pre('r')})", f"z_t = σ({pre('z')})",
                      f"n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn {h} + b_hn))"]
        lines.append(f"{new_h} = (1 - z_t) ⊙ n_t + z_t ⊙ h_{{t-1}}")
    else:
        inner = f"LN(W_ih x_t) ⊙ γ_ih + b_ih + LN(W_hh {h}) ⊙ γ_hh + b_hh" if layer_norm \
            else f"W_ih x_t + b_ih + W_hh {h} + b_hh"
        lines.append(f"{new_h} = ACT({inner})")
    if proj:
        lines.append(f"{new_h} = W_hr {new_h}" + ("           " if zoneout else "            ")
                     + "(projection to proj_size)")
    if zoneout:
        lines.append("h_t = d_t ⊙ h_{t-1} + (1 - d_t) ⊙ h̃_t")
    return lines


def _options_notes(kind: str, layer) -> list[list[str]]:
    """What the symbols the options bring mean: one note per option, in lines."""
    notes = []
    if layer.layer_norm:
        notes.append(["LN(v) = (v - mean(v)) / sqrt(var(v) + 1e-5) over all entries of v",
                      "(one sequence at one step, biased variance); gains γ start at 1"
                      + (", β_c at 0" if kind == "lstm" else "")])
    if layer.recurrent_dropout:
        p = layer.recurrent_dropout
        notes.append([f"m: recurrent dropout = {p} (training only): a keep-mask (N, H_out) "
                      "drawn once per call",
                      f"and layer-direction, entries 0 or 1/(1 - {p}); in eval m = 1, "
                      "i.e. W_hh h_{t-1}"])
    if layer.zoneout:
        p = layer.zoneout
        notes.append([f"d_t: zoneout = {p} (training): a mask (N, H_out) drawn each step, "
                      f"P(d = 1) = {p}",
                      "eval: h_t = zoneout ⊙ h_{t-1} + (1 - zoneout) ⊙ h̃_t "
                      f"= {p} ⊙ h_{{t-1}} + {1 - p:g} ⊙ h̃_t"])
    if layer.peepholes:
        notes.append(["p_i, p_f, p_o: peephole weights (H,) each, weight_ph rows p_i|p_f|p_o;",
                      "they read the raw c (not its layer norm)"])
    return notes


def _lengths(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 5,3,2, got {text!r}"
        ) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", choices=["lstm", "gru", "rnn"], help="layer type")
    parser.add_argument("--input-size", type=_positive, default=10, help="H_in (default 10)")
    parser.add_argument("--hidden-size", type=_positive, default=20, help="H (default 20)")
    parser.add_argument("--num-layers", type=_positive, default=1, help="stacked layers")
    parser.add_argument("--seq-len", type=_positive, default=5, help="L, steps (default 5)")
    parser.add_argument("--batch", type=_positive, default=3, help="N, sequences (default 3)")
    parser.add_argument("--bidirectional", action="store_true")
    parser.add_argument("--batch-first", action="store_true")
    parser.add_argument("--no-bias", action="store_true", help="bias=False")
    parser.add_argument("--proj-size", type=int, default=0, help="LSTM projection size")
    parser.add_argument("--nonlinearity", default="tanh", help="RNN: tanh or relu")
    parser.add_argument("--lengths", type=_lengths, default=None,
                        help="per-sequence lengths, e.g. 5,0,2 (0 allowed): show the call "
                             "layer(input, lengths=...) and torch's packed form")
    parser.add_argument("--padding-side", choices=["right", "left"], default="right",
                        help="with --lengths: where the padding is; left: each sequence's "
                             "real steps are the last lengths[b] of the time axis")
    options = parser.add_argument_group("cell options (beyond torch)")
    options.add_argument("--layer-norm", action="store_true",
                         help="layer_norm=True: layer-normalize both projections (and the "
                              "LSTM's c_t)")
    options.add_argument("--recurrent-dropout", type=_fraction, default=0.0, metavar="P",
                         help="recurrent_dropout=P: drop h_{t-1} where W_hh reads it "
                              "(training)")
    options.add_argument("--zoneout", type=_fraction, default=0.0, metavar="P",
                         help="zoneout=P: keep each unit of h_{t-1} with probability P")
    options.add_argument("--peepholes", action="store_true",
                         help="peepholes=True (lstm only): c feeds the i, f and o gates")


def _row(name: str, shape, meaning: str, width: int = 22) -> str:
    return f"  {name:<{width}} {str(tuple(shape)):<16} {meaning}"


def explain(args: argparse.Namespace) -> str:
    """The explanation as text (``run`` prints it)."""
    import numpy as np

    from .. import nn, no_grad

    kind = args.model
    kwargs = dict(num_layers=args.num_layers, bias=not args.no_bias,
                  batch_first=args.batch_first, bidirectional=args.bidirectional)
    # the cell options only when set (the layer checks them, e.g. peepholes on a GRU)
    for name, off in (("layer_norm", False), ("recurrent_dropout", 0.0), ("zoneout", 0.0),
                      ("peepholes", False)):
        value = getattr(args, name, off)
        if value != off:
            kwargs[name] = value
    if kind == "lstm":
        layer = nn.LSTM(args.input_size, args.hidden_size, proj_size=args.proj_size, **kwargs)
    else:
        if args.proj_size:
            raise ValueError(f"--proj-size is only supported for lstm, not {kind}")
        if kind == "gru":
            layer = nn.GRU(args.input_size, args.hidden_size, **kwargs)
        else:
            layer = nn.RNN(args.input_size, args.hidden_size,
                           nonlinearity=args.nonlinearity, **kwargs)
    L, N, H_in, H = args.seq_len, args.batch, args.input_size, args.hidden_size
    D = 2 if args.bidirectional else 1
    H_out = args.proj_size or H
    x_shape = (N, L, H_in) if args.batch_first else (L, N, H_in)
    x = np.zeros(x_shape, np.float32)
    h_0 = np.zeros((args.num_layers * D, N, H_out), np.float32)
    c_0 = np.zeros((args.num_layers * D, N, H), np.float32)
    options = layer._options.any
    if options:
        layer.eval()  # shapes are the same either way; eval draws no masks
    with no_grad():
        result = layer(x, (h_0, c_0) if kind == "lstm" else h_0)
    output, state = result
    h_n, c_n = state if kind == "lstm" else (state, None)

    axes = "(batch N, seq_len L, input_size H_in)" if args.batch_first else \
        "(seq_len L, batch N, input_size H_in)"
    out_axes = "(N, L, D*H_out)" if args.batch_first else "(L, N, D*H_out)"
    h_word = "proj_size" if args.proj_size else "hidden_size"
    lines = [f"{layer!r}", ""]
    lines.append(f"D = {D} direction{'s' if D == 2 else ''}, H_out = {H_out} "
                 f"({h_word}), H_cell = {H}")
    lines.append("")
    lines.append("Each step t of each layer computes:")
    act = args.nonlinearity
    if options:
        equations = _options_equations(kind, layer.layer_norm, bool(layer.recurrent_dropout),
                                       bool(layer.zoneout), layer.peepholes,
                                       kind == "lstm" and bool(args.proj_size))
        lines += ["    " + eq.replace("ACT", act) for eq in equations]
        for k, note in enumerate(_options_notes(kind, layer)):
            lines.append(("  where " if k == 0 else " " * 8) + note[0])
            lines += [" " * 10 + more for more in note[1:]]
    else:
        lines += ["    " + eq.replace("ACT", act) for eq in _EQUATIONS[kind]]
        if kind == "lstm" and args.proj_size:
            lines.append("    h_t = W_hr h_t            (projection to proj_size)")
    lines += ["", "Tensors:"]
    lines.append(_row("input", x.shape, axes))
    lines.append(_row("h_0", h_0.shape, "(num_layers*num_directions, batch, "
                      f"{h_word}); never batch-first; row 2*layer+direction"))
    if kind == "lstm":
        lines.append(_row("c_0", c_0.shape, "(num_layers*num_directions, batch, hidden_size)"))
    lines.append(_row("output", output.shape, f"{out_axes}: last layer's h_t at every step"
                      + (", forward half first" if D == 2 else "")))
    lines.append(_row("h_n", h_n.shape, "every layer and direction's h at its last step"))
    if kind == "lstm":
        lines.append(_row("c_n", c_n.shape, "every layer and direction's c at its last step"))
    lines += ["", f"Parameters (init U(-1/sqrt({H}), 1/sqrt({H})) = "
                  f"U(-{1 / np.sqrt(H):.4f}, {1 / np.sqrt(H):.4f})):"]
    total = 0
    # option names run longer (weight_ln_ih_l0_reverse): widen the column for them only
    width = max([22] + [len(name) + 1 for name, _ in layer.named_parameters()])
    for name, p in layer.named_parameters():
        total += p.size
        meaning = next((text for prefix, text in _MEANINGS if name.startswith(prefix)),
                       f"{name[:7]}, {{rows}}")  # the biases
        lines.append(_row(name, p.shape, meaning.format(rows=_ROWS[kind]), width))
    lines.append(f"  total parameters: {total:,}")
    if args.lengths is not None:
        lines += _explain_lengths(layer, x, h_0, c_0, args, kind == "lstm")
    elif args.padding_side == "left":
        raise ValueError("--padding-side left needs --lengths: it says where each "
                         "sequence's real steps are")
    return "\n".join(lines)


def _explain_lengths(layer, x, h_0, c_0, args, lstm) -> list[str]:
    """The ``lengths=`` call of this configuration: its layout, computed by running it; and
    the packed form torch would need instead (when torch can make one)."""
    import numpy as np

    from .. import no_grad
    from ..nn.modules._lengths import layout
    from ..nn.utils.rnn import pack_padded_sequence

    left = args.padding_side == "left"
    with no_grad():
        output, state = layer(x, (h_0, c_0) if lstm else h_0, lengths=args.lengths,
                              padding_side=args.padding_side)
    h_n = state[0] if lstm else state
    lengths = np.asarray(args.lengths, dtype=np.int64)
    L = args.seq_len
    run = layout(lengths, len(lengths), L, left)
    zeros = [b for b, n in enumerate(lengths) if n == 0]
    side = ("left: sequence b's real steps are the last lengths[b] positions" if left
            else "right: sequence b's real steps are the first lengths[b] positions")
    finals, initials = ("h_n, c_n", "h_0, c_0") if lstm else ("h_n", "h_0")
    lines = ["", f"Called as layer(input, hx, lengths={lengths.tolist()}, "
                 f"padding_side={args.padding_side!r}) (beyond torch):"]
    lines.append(_row("lengths", lengths.shape, f"{lengths.tolist()}: real steps of each "
                      "sequence, 0 <= lengths[b] <= seq_len"))
    lines.append(f"  padding {side}:")
    for b, n in enumerate(lengths):
        marks = ["x" if (L - n <= t if left else t < n) else "." for t in range(L)]
        lines.append(f"    sequence {b:<3} {' '.join(marks)}")
    lines.append("    (x: a real step, .: padding, which is never read)")
    lines.append(_row("output", output.shape, "the same layout as input: each real step's h_t, "
                      "0 at every padding position"))
    lines.append(_row("h_n", h_n.shape, "each sequence's h at its own last real step (reverse "
                      "direction: at its first), in the caller's batch order"))
    if zeros:
        lines.append(f"  length 0 (sequence {', '.join(map(str, zeros))}): output all 0, "
                     f"{finals} = {initials} (zeros by default)")
    if run.sorted_indices is not None:
        lines.append(_row("sorted order", lengths.shape, f"{run.sorted_indices.tolist()}: "
                          "the batch runs sorted by length, inside the call"))
    lines.append(_row("batch_sizes", run.batch_sizes.shape, f"{run.batch_sizes.tolist()}: "
                      "sequences still running at each step"))
    lines += ["", "What torch needs instead: pack_padded_sequence(..., enforce_sorted=False), "
                  "the call, pad_packed_sequence(..., total_length=seq_len):"]
    if zeros:
        lines.append("  torch refuses a length of 0: it cannot pack this batch; drop sequence "
                     f"{', '.join(map(str, zeros))} first, then put its zero output and its "
                     f"{initials} back in place")
        return lines
    if left:
        lines.append("  torch cannot read left padding: move each sequence's steps to the "
                     "front first, and back after")
    packed = pack_padded_sequence(x, lengths, batch_first=args.batch_first,
                                  enforce_sorted=False)
    with no_grad():
        packed_out = layer(packed)[0]
    lines.append(_row("sorted_indices", packed.sorted_indices.shape,
                      f"{packed.sorted_indices.tolist()}: batch sorted by length"))
    lines.append(_row("batch_sizes", packed.batch_sizes.shape,
                      f"{packed.batch_sizes.tolist()}: sequences still running at "
                      "each step"))
    lines.append(_row("input.data", packed.data.shape,
                      "(sum(lengths), input_size): steps of all sequences, time-major"))
    lines.append(_row("output.data", packed_out.data.shape,
                      "(sum(lengths), D*H_out); same batch_sizes and indices"))
    lines.append("  h_n holds each sequence's state at its own last step "
                 "(reverse direction: at step 0), in the original batch order")
    return lines


def run(args: argparse.Namespace) -> int:
    print(explain(args))
    return 0
