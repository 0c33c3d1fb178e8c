"""`rnnkit explain`: the seed's explanation, computed; and the CLI's error convention."""

import re
import subprocess
import sys

import pytest

import rnnkit
from rnnkit.cli import main


def explain(capsys, *argv):
    assert main(["explain", *argv]) == 0
    return capsys.readouterr().out


def shape_of(text, name):
    match = re.search(rf"^  {re.escape(name)}\s+(\([0-9, ]*\))", text, re.M)
    assert match, f"{name} not in output:\n{text}"
    return eval(match.group(1))  # a tuple literal printed by us


def test_seed_configuration(capsys):
    out = explain(capsys, "lstm", "--input-size", "10", "--hidden-size", "20",
                  "--num-layers", "2", "--seq-len", "5", "--batch", "3")
    assert shape_of(out, "input") == (5, 3, 10)
    assert shape_of(out, "h_0") == (2, 3, 20)
    assert shape_of(out, "c_0") == (2, 3, 20)
    assert shape_of(out, "output") == (5, 3, 20)
    assert shape_of(out, "h_n") == (2, 3, 20)
    assert shape_of(out, "c_n") == (2, 3, 20)
    assert shape_of(out, "weight_ih_l0") == (80, 10)
    assert shape_of(out, "weight_ih_l1") == (80, 20)
    assert "(seq_len L, batch N, input_size H_in)" in out
    assert "(num_layers*num_directions, batch, hidden_size)" in out
    assert "c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t" in out
    total = sum(p.size for p in rnnkit.nn.LSTM(10, 20, 2).parameters())
    assert f"total parameters: {total:,}" in out


def test_bidirectional_batch_first_projection_and_lengths(capsys):
    out = explain(capsys, "lstm", "--input-size", "10", "--hidden-size", "20",
                  "--num-layers", "2", "--seq-len", "5", "--batch", "3", "--bidirectional",
                  "--batch-first", "--proj-size", "7", "--lengths", "5,3,2")
    assert shape_of(out, "input") == (3, 5, 10)
    assert shape_of(out, "h_0") == (4, 3, 7)
    assert shape_of(out, "c_0") == (4, 3, 20)
    assert shape_of(out, "output") == (3, 5, 14)
    assert shape_of(out, "weight_hr_l1_reverse") == (7, 20)
    assert shape_of(out, "weight_ih_l1") == (80, 14)
    assert "[3, 3, 2, 1, 1]: sequences still running" in out
    assert shape_of(out, "input.data") == (10, 10)
    assert shape_of(out, "output.data") == (10, 14)
    assert "never batch-first" in out


@pytest.mark.parametrize("kind,gates", [("gru", 3), ("rnn", 1)])
def test_gru_and_rnn(capsys, kind, gates):
    out = explain(capsys, kind, "--input-size", "4", "--hidden-size", "6", "--lengths", "5,1,3")
    assert shape_of(out, "weight_ih_l0") == (gates * 6, 4)
    assert "c_0" not in out
    assert "[3, 2, 2, 1, 1]" in out  # batch_sizes of lengths sorted to [5, 3, 1]


def test_lengths_with_zeros_and_left_padding(capsys):
    out = explain(capsys, "gru", "--input-size", "4", "--hidden-size", "6", "--seq-len", "5",
                  "--batch", "3", "--batch-first", "--lengths", "5,0,2", "--padding-side",
                  "left")
    assert "lengths=[5, 0, 2], padding_side='left'" in out
    assert "the last lengths[b] positions" in out
    picture = [line.split()[2:] for line in out.splitlines()
               if line.startswith("    sequence ")]
    assert picture == [list("xxxxx"), list("....."), list("...xx")]
    call = out[out.index("Called as layer"):]
    assert shape_of(call, "output") == (3, 5, 6)  # batch_first, as the input
    assert shape_of(call, "h_n") == (1, 3, 6)
    assert "length 0 (sequence 1): output all 0, h_n = h_0" in out
    assert "[0, 2, 1]: the batch runs sorted by length" in out
    assert "[2, 2, 1, 1, 1]: sequences still running at each step" in out
    assert "torch refuses a length of 0" in out
    assert "input.data" not in out  # no packed form: torch cannot make one


def test_left_padding_without_zeros_shows_torchs_packed_form(capsys):
    out = explain(capsys, "lstm", "--seq-len", "4", "--batch", "2", "--lengths", "2,4",
                  "--padding-side", "left")
    assert "c_n = h_0, c_0" not in out  # no zero length
    assert "torch cannot read left padding" in out
    assert shape_of(out, "input.data") == (6, 10)


def test_user_mistakes_are_one_line_and_exit_2(capsys):
    assert main(["explain", "lstm", "--hidden-size", "20", "--proj-size", "20"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("rnnkit explain: proj_size has to be smaller than hidden_size")
    assert main(["explain", "lstm", "--seq-len", "3", "--batch", "2", "--lengths", "4,1"]) == 2
    assert "must not exceed the padded length" in capsys.readouterr().err
    assert main(["explain", "gru", "--proj-size", "3"]) == 2
    assert "only supported for lstm" in capsys.readouterr().err
    assert main(["explain", "rnn", "--padding-side", "left"]) == 2
    assert "--padding-side left needs --lengths" in capsys.readouterr().err
    assert main(["explain", "rnn", "--seq-len", "3", "--batch", "2", "--lengths", "3,-1"]) == 2
    assert "lengths must not be negative, got lengths [3, -1]" in capsys.readouterr().err


def test_python_dash_m_and_help():
    result = subprocess.run([sys.executable, "-m", "rnnkit", "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0
    assert "explain" in result.stdout
    result = subprocess.run([sys.executable, "-m", "rnnkit", "explain", "rnn", "--batch", "0"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "expected a positive integer, got 0" in result.stderr
