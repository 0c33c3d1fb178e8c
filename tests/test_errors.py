"""Bad input at the public boundary: the error type, and a message that names the
argument, the expected shape in the seed's vocabulary with numbers, and what came."""

import re
import warnings

import numpy as np
import pytest

import rnnkit
from rnnkit import nn
from rnnkit.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence, pad_sequence


def f32(*shape):
    return np.zeros(shape, np.float32)


def raises(kind, *fragments):
    """pytest.raises whose message must contain every fragment (literally)."""
    return pytest.raises(kind, match="(?s)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments))


# ---------------------------------------------------------------- input


def test_input_rank():
    with raises(ValueError, "input must be 3-D (seq_len, batch, input_size)", "(seq_len, "
                "input_size)", "got 4-D shape (1, 5, 3, 10)"):
        nn.LSTM(10, 20)(f32(1, 5, 3, 10))
    with raises(ValueError, "(batch, seq_len, input_size)", "got 1-D"):
        nn.GRU(10, 20, batch_first=True)(f32(10))


def test_feature_size():
    with raises(ValueError, "input must have shape (seq_len, batch, input_size) = (5, 3, 10)",
                "got (5, 3, 7)"):
        nn.LSTM(10, 20)(f32(5, 3, 7))
    with raises(ValueError, "(batch, seq_len, input_size) = (3, 5, 10)", "got (3, 5, 7)"):
        nn.RNN(10, 20, batch_first=True)(f32(3, 5, 7))
    with raises(ValueError, "(seq_len, input_size) = (5, 10)", "got (5, 4)"):
        nn.GRU(10, 20)(f32(5, 4))


def test_h0_shape_names_the_vocabulary():
    lstm = nn.LSTM(10, 20, num_layers=2, bidirectional=True)
    with raises(ValueError, "h_0 must have shape (num_layers*num_directions, batch, hidden_size)"
                " = (4, 3, 20), got (2, 3, 20)"):
        lstm(f32(5, 3, 10), (f32(2, 3, 20), f32(4, 3, 20)))
    with raises(ValueError, "c_0 must have shape (num_layers*num_directions, batch, hidden_size)"
                " = (4, 3, 20), got (4, 3, 21)"):
        lstm(f32(5, 3, 10), (f32(4, 3, 20), f32(4, 3, 21)))


def test_h0_with_projection_says_proj_size():
    lstm = nn.LSTM(10, 20, proj_size=5)
    with raises(ValueError, "(num_layers*num_directions, batch, proj_size) = (1, 3, 5)",
                "got (1, 3, 20)"):
        lstm(f32(5, 3, 10), (f32(1, 3, 20), f32(1, 3, 20)))


def test_batch_first_looking_state_says_states_are_never_batch_first():
    gru = nn.GRU(10, 20, num_layers=2, batch_first=True)
    with raises(ValueError, "= (2, 3, 20), got (3, 2, 20)", "never batch-first",
                "transpose(1, 0, 2)"):
        gru(f32(3, 5, 10), f32(3, 2, 20))


def test_state_batch_differs_from_input_batch():
    with raises(ValueError, "= (1, 3, 20), got (1, 4, 20)", "batch (4)",
                "input's batch (3)"):
        nn.RNN(10, 20)(f32(5, 3, 10), f32(1, 4, 20))


def test_unbatched_input_with_batched_state_and_reverse():
    with raises(ValueError, "for unbatched 2-D input, h_0 must be 2-D", "(1, 20)",
                "got 3-D shape (1, 1, 20)"):
        nn.GRU(10, 20)(f32(5, 10), f32(1, 1, 20))
    with raises(ValueError, "for batched 3-D input, h_0 must be 3-D", "(1, 3, 20)",
                "got 2-D shape (1, 20)"):
        nn.LSTM(10, 20)(f32(5, 3, 10), (f32(1, 20), f32(1, 20)))


def test_dtype_mismatch_is_not_cast():
    with raises(TypeError, "input has dtype float64", "float32", "astype(np.float32)",
                "dtype=np.float64"):
        nn.LSTM(10, 20)(np.zeros((5, 3, 10)))
    with raises(TypeError, "h_0 has dtype float32", "float64"):
        nn.GRU(10, 20, dtype=np.float64)(np.zeros((5, 3, 10)), f32(1, 3, 20))
    with raises(TypeError, "input must be a float32 or float64 array, got int64"):
        nn.RNN(10, 20)(np.zeros((5, 3, 10), np.int64))
    with raises(TypeError, "input must be a numpy array, got list"):
        nn.RNN(1, 2)([[[0.0]]])


def test_hx_structure():
    with raises(TypeError, "hx must be a tuple (h_0, c_0) for the LSTM"):
        nn.LSTM(10, 20)(f32(5, 3, 10), f32(1, 3, 20))
    with raises(TypeError, "hx must be one array h_0 for the GRU"):
        nn.GRU(10, 20)(f32(5, 3, 10), (f32(1, 3, 20), f32(1, 3, 20)))


# ---------------------------------------------------------------- lengths


def test_unsorted_lengths_with_enforce_sorted():
    with raises(ValueError, "lengths must be in decreasing order when enforce_sorted=True",
                "got [2, 3, 1]", "enforce_sorted=False"):
        pack_padded_sequence(f32(3, 3, 1), [2, 3, 1])


def test_equal_lengths_are_sorted():
    packed = pack_padded_sequence(f32(3, 3, 1), [3, 3, 2])
    assert packed.batch_sizes.tolist() == [3, 3, 2]


def test_zero_and_too_long_lengths():
    with raises(ValueError, "every length must be at least 1", "[3, 0]"):
        pack_padded_sequence(f32(3, 2, 1), [3, 0])
    with raises(ValueError, "must not exceed the padded length of input (seq_len = 3)",
                "[4, 2]"):
        pack_padded_sequence(f32(3, 2, 1), [4, 2])
    with raises(ValueError, "one entry per sequence", "expected 2", "got 3"):
        pack_padded_sequence(f32(3, 2, 1), [3, 2, 1])
    with raises(TypeError, "lengths must be integers"):
        pack_padded_sequence(f32(3, 2, 1), [2.5, 1.0])


def test_total_length_too_short():
    packed = pack_padded_sequence(f32(3, 2, 1), [3, 2])
    with raises(ValueError, "total_length=2", "max sequence length being 3"):
        pad_packed_sequence(packed, total_length=2)


def test_pad_sequence_errors():
    with raises(ValueError, "padding_side must be 'left' or 'right'", "'top'"):
        pad_sequence([f32(2, 1)], padding_side="top")
    with raises(ValueError, "same trailing shape", "sequences[1] has (2, 3)"):
        pad_sequence([f32(2, 1), f32(2, 3)])


def test_packed_data_feature_size():
    packed = pack_padded_sequence(f32(3, 2, 4), [3, 2])
    with raises(ValueError, "input.data must have shape (sum(lengths), input_size) = (5, 10)",
                "got (5, 4)"):
        nn.LSTM(10, 20)(packed)


# ---------------------------------------------------------------- constructors


def test_proj_size_errors():
    with raises(ValueError, "proj_size has to be smaller than hidden_size",
                "proj_size=20 >= hidden_size=20"):
        nn.LSTM(10, 20, proj_size=20)
    with raises(ValueError, "proj_size should be a positive integer or zero", "-1"):
        nn.LSTM(10, 20, proj_size=-1)
    with raises(ValueError, "proj_size argument is only supported for LSTM, not GRU"):
        nn.GRU(10, 20, proj_size=5)
    with raises(ValueError, "proj_size argument is only supported for LSTM, not RNN"):
        nn.RNN(10, 20, proj_size=5)


def test_bad_nonlinearity():
    with raises(ValueError, "Unknown nonlinearity 'sigmoid'", "'tanh' or 'relu'"):
        nn.RNN(10, 20, nonlinearity="sigmoid")
    with raises(ValueError, "Unknown nonlinearity 'gelu'"):
        nn.RNNCell(10, 20, nonlinearity="gelu")


@pytest.mark.parametrize("p", [-0.1, 1.5, "0.5", True])
def test_dropout_outside_unit_interval(p):
    with raises(ValueError, "dropout should be a number in range [0, 1]", repr(p)):
        nn.LSTM(10, 20, num_layers=2, dropout=p)


def test_dropout_with_one_layer_warns_like_torch():
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        nn.GRU(10, 20, dropout=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nn.GRU(10, 20, num_layers=2, dropout=0.5)  # no warning


def test_bad_sizes_and_dtype():
    with raises(ValueError, "hidden_size must be at least 1, got 0"):
        nn.LSTM(10, 0)
    with raises(TypeError, "num_layers must be an int, got float"):
        nn.LSTM(10, 20, num_layers=2.0)
    with raises(TypeError, "dtype must be np.float32 or np.float64, got int32"):
        nn.GRU(10, 20, dtype=np.int32)


def test_unknown_keyword():
    with raises(TypeError, "unexpected keyword argument 'hidden'"):
        nn.GRU(10, 20, hidden=3)


# ---------------------------------------------------------------- cells and modules


def test_cell_errors():
    cell = nn.LSTMCell(10, 20)
    with raises(ValueError, "input must have shape (batch, input_size) = (N, 10)",
                "(input_size,) = (10,)", "got (3, 7)"):
        cell(f32(3, 7))
    with raises(ValueError, "h must have shape (batch, hidden_size) = (3, 20)", "got (4, 20)"):
        cell(f32(3, 10), (f32(4, 20), f32(3, 20)))
    with raises(ValueError, "hx must have shape unbatched (hidden_size,) = (20,)",
                "got (1, 20)"):
        nn.GRUCell(10, 20)(f32(10), f32(1, 20))
    with raises(TypeError, "hx must be a tuple (h, c) for LSTMCell"):
        cell(f32(3, 10), f32(3, 20))


def test_load_state_dict_errors():
    lstm = nn.LSTM(2, 3)
    state = lstm.state_dict()
    del state["bias_hh_l0"]
    with raises(ValueError, "missing keys ['bias_hh_l0']"):
        lstm.load_state_dict(state)
    state = nn.LSTM(2, 3).state_dict()
    state["weight_hh_l0"] = np.zeros((12, 4))
    with raises(ValueError, "state_dict['weight_hh_l0'] has shape (12, 4)",
                "has shape (12, 3)"):
        lstm.load_state_dict(state)
    state = nn.LSTM(2, 3).state_dict()
    state["weight_hh_l1"] = np.zeros((12, 3))
    with raises(ValueError, "unexpected keys ['weight_hh_l1']"):
        lstm.load_state_dict(state)
    missing, unexpected = lstm.load_state_dict(state, strict=False)
    assert (missing, unexpected) == ([], ["weight_hh_l1"])


def test_manual_seed_errors():
    with raises(TypeError, "seed must be an int"):
        rnnkit.manual_seed(1.5)
    with raises(ValueError, "seed must be non-negative"):
        rnnkit.manual_seed(-1)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("size", [0, -3])
def test_a_layer_without_input_features_is_refused_as_torch_does(kind, size, torch):
    with pytest.raises(ValueError) as theirs:
        getattr(torch.nn, kind)(size, 5)
    with raises(ValueError, str(theirs.value), f"got {size}"):
        getattr(nn, kind)(size, 5)


@pytest.mark.parametrize("kind", ["LSTMCell", "GRUCell", "RNNCell"])
def test_a_cell_without_input_features_works_as_torch_does(kind, torch):
    # torch 2.13 accepts input_size=0 for its cells (not its layers): the step is then
    # driven by the hidden state alone, and rnnkit gives the same numbers
    from helpers import build_pair

    theirs, ours = build_pair(torch, kind, np.float64, input_size=0, hidden_size=4)
    h = np.random.default_rng(1).standard_normal((3, 4))
    hx = (h, h * 0.5) if kind == "LSTMCell" else h
    hx_t = tuple(map(torch.from_numpy, hx)) if kind == "LSTMCell" else torch.from_numpy(h)
    out, out_t = ours(np.zeros((3, 0)), hx), theirs(torch.zeros(3, 0, dtype=torch.float64), hx_t)
    for a, b in zip(*(((out,), (out_t,)) if kind != "LSTMCell" else (out, out_t)), strict=True):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-12, atol=1e-14)
