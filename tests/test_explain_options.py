"""`rnnkit explain` with the cell options (API.md "Cell options (beyond torch)"): the
equations with each option applied or not, the options' parameters and their shapes, and
the layer's own errors (peepholes on a GRU/RNN) as the CLI's one-line exit 2."""

from __future__ import annotations

import re

import pytest

from rnnkit import nn
from rnnkit.cli import main
from rnnkit.commands import explain as explain_module

SIZES = ["--input-size", "4", "--hidden-size", "6"]


def explain(capsys, *argv):
    assert main(["explain", *argv]) == 0
    return capsys.readouterr().out


def equations(text):
    """The equation lines (and their notes) between the heading and the tensor table."""
    start = text.index("Each step t of each layer computes:\n")
    return [line for line in text[start:text.index("\nTensors:")].splitlines()[1:] if line]


def shape_of(text, name):
    match = re.search(rf"^  {re.escape(name)}\s+(\([0-9, ]*\))", text, re.M)
    assert match, f"{name} not in output:\n{text}"
    return eval(match.group(1))  # a tuple literal printed by us


def parameter_names(text):
    listing = text[text.index("Parameters ("):text.index("total parameters")]
    return [line.split()[0] for line in listing.splitlines()[1:] if line.strip()]


# ------------------------------------------------------------------ plain output unchanged


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_without_options_the_equations_are_torchs(capsys, kind):
    eqs = [line.strip() for line in equations(explain(capsys, kind, *SIZES))]
    expected = [eq.replace("ACT", "tanh") for eq in explain_module._EQUATIONS[kind]]
    assert eqs == expected
    # the option renderer reproduces them with every option off
    for proj in [False, True] if kind == "lstm" else [False]:
        rendered = explain_module._options_equations(kind, False, False, False, False, proj)
        assert rendered == explain_module._EQUATIONS[kind] + (
            ["h_t = W_hr h_t            (projection to proj_size)"] if proj else [])


def test_without_options_no_option_words_appear(capsys):
    out = explain(capsys, "lstm", *SIZES, "--bidirectional", "--proj-size", "3")
    for word in ["LN(", "γ", "m ⊙", "d_t", "h̃_t", "p_i", "weight_ln", "weight_ph", "where "]:
        assert word not in out, word
    assert out.splitlines()[0] == "LSTM(4, 6, proj_size=3, bidirectional=True)"


# ------------------------------------------------------------------ each option


def test_layer_norm_lstm(capsys):
    out = explain(capsys, "lstm", *SIZES, "--layer-norm")
    eqs = [line.strip() for line in equations(out)]
    assert out.splitlines()[0] == "LSTM(4, 6, layer_norm=True)"
    assert eqs[0].startswith("a_t = LN(W_ih x_t) ⊙ γ_ih + b_ih + LN(W_hh h_{t-1}) ⊙ γ_hh "
                             "+ b_hh")
    assert "i_t = σ(a_i)" in eqs and "g_t = tanh(a_g)" in eqs and "o_t = σ(a_o)" in eqs
    assert "h_t = o_t ⊙ tanh(LN(c_t) ⊙ γ_c + β_c)" in eqs
    assert any(line.startswith("where LN(v) = (v - mean(v)) / sqrt(var(v) + 1e-5)")
               for line in eqs)
    assert not any("m ⊙" in line or "d_t" in line or "p_i" in line for line in eqs)
    assert shape_of(out, "weight_ln_ih_l0") == (24,)
    assert shape_of(out, "weight_ln_hh_l0") == (24,)
    assert shape_of(out, "weight_ln_c_l0") == (6,)
    assert shape_of(out, "bias_ln_c_l0") == (6,)
    assert "weight_ph_l0" not in out
    total = sum(p.size for p in nn.LSTM(4, 6, layer_norm=True).parameters())
    assert f"total parameters: {total:,}" in out


@pytest.mark.parametrize("kind,gates", [("gru", 3), ("rnn", 1)])
def test_layer_norm_gru_and_rnn(capsys, kind, gates):
    out = explain(capsys, kind, *SIZES, "--layer-norm", "--num-layers", "2",
                  "--bidirectional")
    eqs = [line.strip() for line in equations(out)]
    if kind == "gru":
        assert "a_t = LN(W_ih x_t) ⊙ γ_ih + b_ih          (3H entries, rows r|z|n)" in eqs
        assert "b_t = LN(W_hh h_{t-1}) ⊙ γ_hh + b_hh" in eqs
        assert "n_t = tanh(a_n + r_t ⊙ b_n)" in eqs
        assert "h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}" in eqs
    else:
        assert "h_t = tanh(LN(W_ih x_t) ⊙ γ_ih + b_ih + LN(W_hh h_{t-1}) ⊙ γ_hh + b_hh)" in eqs
    assert "β_c" not in out and "weight_ln_c" not in out and "bias_ln_c" not in out
    for suffix in ["_l0", "_l0_reverse", "_l1", "_l1_reverse"]:
        assert shape_of(out, "weight_ln_ih" + suffix) == (gates * 6,)
        assert shape_of(out, "weight_ln_hh" + suffix) == (gates * 6,)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_recurrent_dropout(capsys, kind):
    out = explain(capsys, kind, *SIZES, "--recurrent-dropout", "0.25")
    eqs = [line.strip() for line in equations(out)]
    assert "recurrent_dropout=0.25" in out.splitlines()[0]
    recurrent = [line for line in eqs if "W_h" in line and "=" in line[:5]]
    assert recurrent and all("(m ⊙ h_{t-1})" in line for line in recurrent)
    assert not any(re.search(r"W_h\w h_\{t-1\}|W_hh h_\{t-1\}", line) for line in recurrent)
    assert any(line.startswith("where m: recurrent dropout = 0.25 (training only)")
               for line in eqs)
    assert any("in eval m = 1" in line for line in eqs)
    if kind == "gru":  # the update's z_t ⊙ h_{t-1} is not masked
        assert "h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}" in eqs
    # no parameters of its own
    assert parameter_names(out) == [name for name, _ in getattr(nn, kind.upper())(
        4, 6).named_parameters()]


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_zoneout(capsys, kind):
    out = explain(capsys, kind, *SIZES, "--zoneout", "0.1")
    eqs = [line.strip() for line in equations(out)]
    assert "zoneout=0.1" in out.splitlines()[0]
    assert "h_t = d_t ⊙ h_{t-1} + (1 - d_t) ⊙ h̃_t" in eqs
    assert sum(line.startswith("h̃_t = ") for line in eqs) == 1  # the step's own new state
    assert not any(line.startswith("h_t = ") and "d_t" not in line for line in eqs)
    assert "eval: h_t = zoneout ⊙ h_{t-1} + (1 - zoneout) ⊙ h̃_t = 0.1 ⊙ h_{t-1} + 0.9 ⊙ h̃_t" \
        in eqs
    assert "m ⊙" not in out and "LN(" not in out
    assert parameter_names(out) == [name for name, _ in getattr(nn, kind.upper())(
        4, 6).named_parameters()]


def test_zoneout_with_projection(capsys):
    eqs = [line.strip() for line in equations(explain(capsys, "lstm", *SIZES, "--zoneout",
                                                      "0.3", "--proj-size", "2"))]
    k = eqs.index("h̃_t = o_t ⊙ tanh(c_t)")
    assert eqs[k + 1].startswith("h̃_t = W_hr h̃_t")  # the projection, before zoneout
    assert eqs[k + 2] == "h_t = d_t ⊙ h_{t-1} + (1 - d_t) ⊙ h̃_t"


def test_peepholes(capsys):
    out = explain(capsys, "lstm", *SIZES, "--peepholes", "--num-layers", "2",
                  "--bidirectional")
    eqs = [line.strip() for line in equations(out)]
    assert out.splitlines()[0] == "LSTM(4, 6, num_layers=2, bidirectional=True, peepholes=True)"
    assert "i_t = σ(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi + p_i ⊙ c_{t-1})" in eqs
    assert "f_t = σ(W_if x_t + b_if + W_hf h_{t-1} + b_hf + p_f ⊙ c_{t-1})" in eqs
    assert "o_t = σ(W_io x_t + b_io + W_ho h_{t-1} + b_ho + p_o ⊙ c_t)" in eqs
    assert "g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)" in eqs  # no peephole on g
    # o_t reads c_t: it comes after it
    assert eqs.index("c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t") < \
        eqs.index("o_t = σ(W_io x_t + b_io + W_ho h_{t-1} + b_ho + p_o ⊙ c_t)")
    assert "h_t = o_t ⊙ tanh(c_t)" in eqs
    for suffix in ["_l0", "_l0_reverse", "_l1", "_l1_reverse"]:
        assert shape_of(out, "weight_ph" + suffix) == (18,)
    assert "weight_ln" not in out
    total = sum(p.size for p in nn.LSTM(4, 6, 2, bidirectional=True,
                                        peepholes=True).parameters())
    assert f"total parameters: {total:,}" in out


def test_every_option_at_once(capsys):
    out = explain(capsys, "lstm", *SIZES, "--layer-norm", "--recurrent-dropout", "0.5",
                  "--zoneout", "0.2", "--peepholes")
    eqs = [line.strip() for line in equations(out)]
    assert out.splitlines()[0] == ("LSTM(4, 6, layer_norm=True, recurrent_dropout=0.5, "
                                   "zoneout=0.2, peepholes=True)")
    assert eqs[:8] == [
        "a_t = LN(W_ih x_t) ⊙ γ_ih + b_ih + LN(W_hh (m ⊙ h_{t-1})) ⊙ γ_hh + b_hh   "
        "(4H entries, rows i|f|g|o)",
        "i_t = σ(a_i + p_i ⊙ c_{t-1})",
        "f_t = σ(a_f + p_f ⊙ c_{t-1})",
        "g_t = tanh(a_g)",
        "c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t",
        "o_t = σ(a_o + p_o ⊙ c_t)",
        "h̃_t = o_t ⊙ tanh(LN(c_t) ⊙ γ_c + β_c)",
        "h_t = d_t ⊙ h_{t-1} + (1 - d_t) ⊙ h̃_t",
    ]
    names = parameter_names(out)
    assert names == [name for name, _ in nn.LSTM(4, 6, layer_norm=True,
                                                 peepholes=True).named_parameters()]
    assert names[-5:] == ["weight_ln_ih_l0", "weight_ln_hh_l0", "weight_ln_c_l0",
                          "bias_ln_c_l0", "weight_ph_l0"]


def test_long_option_names_keep_the_columns_aligned(capsys):
    out = explain(capsys, "gru", *SIZES, "--layer-norm", "--bidirectional")
    listing = out[out.index("Parameters ("):out.index("total parameters")].splitlines()[1:]
    starts = {line.index("(") for line in listing if line.strip()}
    assert len(starts) == 1  # every shape starts in the same column
    assert shape_of(out, "weight_ln_ih_l0_reverse") == (18,)


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("kind", ["gru", "rnn"])
def test_peepholes_on_gru_or_rnn_is_the_layers_error(capsys, kind):
    assert main(["explain", kind, "--peepholes"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    with pytest.raises(ValueError) as layer_error:
        getattr(nn, kind.upper())(10, 20, peepholes=True)
    assert captured.err == f"rnnkit explain: {str(layer_error.value).splitlines()[0]}\n"
    assert f"peepholes=True is only supported for LSTM, not {kind.upper()}" in captured.err


@pytest.mark.parametrize("flag", ["--zoneout", "--recurrent-dropout"])
@pytest.mark.parametrize("value", ["1", "-0.1", "x"])
def test_bad_probabilities_are_usage_errors_naming_the_flag(capsys, flag, value):
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "lstm", flag, value])
    assert exit_info.value.code == 2
    assert f"argument {flag}:" in capsys.readouterr().err
