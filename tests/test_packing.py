"""Packing utilities against torch.nn.utils.rnn, and the properties packing must have."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import rnnkit
from rnnkit.nn.utils.rnn import (
    PackedSequence,
    pack_padded_sequence,
    pack_sequence,
    pad_packed_sequence,
    pad_sequence,
    unpack_sequence,
    unpad_sequence,
)

from helpers import assert_close, build_pair, to_numpy


@pytest.fixture
def tr(torch):
    return torch.nn.utils.rnn


def _same_packed(ours: PackedSequence, theirs, rtol=0.0) -> None:
    assert_close(ours.data, to_numpy(theirs.data), rtol, 0, "data")
    assert ours.batch_sizes.dtype == np.int64
    np.testing.assert_array_equal(ours.batch_sizes, theirs.batch_sizes.numpy())
    for field in ("sorted_indices", "unsorted_indices"):
        a, b = getattr(ours, field), getattr(theirs, field)
        if b is None:
            assert a is None, field
        else:
            np.testing.assert_array_equal(a, b.numpy(), err_msg=field)


LENGTHS = [[4, 4, 2, 1], [3, 1, 4, 2], [2, 2, 2], [5], [1, 3, 3, 1]]


@pytest.mark.parametrize("lengths", LENGTHS)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("as_array", [False, True], ids=["list", "ndarray"])
def test_pack_pad_match_torch(lengths, batch_first, as_array, rng, torch, tr):
    N, T = len(lengths), max(lengths) + 1  # padded longer than the longest sequence
    x = rng.standard_normal((N, T, 3) if batch_first else (T, N, 3))
    sorted_input = all(a >= b for a, b in zip(lengths, lengths[1:]))
    given_lengths = np.array(lengths, dtype=np.int32) if as_array else lengths
    for enforce_sorted in ([True, False] if sorted_input else [False]):
        ours = pack_padded_sequence(x, given_lengths, batch_first, enforce_sorted)
        theirs = tr.pack_padded_sequence(torch.tensor(x), lengths, batch_first, enforce_sorted)
        _same_packed(ours, theirs)
        for total_length in (None, T + 2):
            for padding_value in (0.0, -1.5):
                padded, out_lengths = pad_packed_sequence(ours, batch_first, padding_value,
                                                          total_length)
                padded_t, lengths_t = tr.pad_packed_sequence(theirs, batch_first,
                                                             padding_value, total_length)
                assert_close(padded, to_numpy(padded_t), 0, 0, "padded")
                assert out_lengths.dtype == np.int64
                np.testing.assert_array_equal(out_lengths, lengths_t.numpy())


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("padding_value", [0.0, 9.0])
def test_pad_sequence_matches_torch(batch_first, padding_side, padding_value, rng, torch, tr):
    seqs = [rng.standard_normal((n, 2, 3)) for n in (3, 5, 1)]
    ours = pad_sequence(seqs, batch_first, padding_value, padding_side)
    theirs = tr.pad_sequence([torch.tensor(s) for s in seqs], batch_first, padding_value,
                             padding_side)
    assert_close(ours, to_numpy(theirs), 0, 0)


@pytest.mark.parametrize("enforce_sorted", [True, False])
def test_pack_sequence_and_unpack_match_torch(enforce_sorted, rng, torch, tr):
    lengths = [4, 3, 3, 1] if enforce_sorted else [2, 4, 1, 3]
    seqs = [rng.standard_normal((n, 2)) for n in lengths]
    ours = pack_sequence(seqs, enforce_sorted)
    theirs = tr.pack_sequence([torch.tensor(s) for s in seqs], enforce_sorted)
    _same_packed(ours, theirs)
    for a, b in zip(unpack_sequence(ours), tr.unpack_sequence(theirs)):
        assert_close(a, to_numpy(b), 0, 0)


@pytest.mark.parametrize("batch_first", [False, True])
def test_unpad_sequence_matches_torch(batch_first, rng, torch, tr):
    lengths = [3, 5, 2]
    x = rng.standard_normal((3, 5, 2) if batch_first else (5, 3, 2))
    ours = unpad_sequence(x, np.array(lengths), batch_first)
    theirs = tr.unpad_sequence(torch.tensor(x), torch.tensor(lengths), batch_first)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert_close(a, to_numpy(b), 0, 0)


def test_lengths_accept_int_arrays(rng):
    x = rng.standard_normal((3, 2, 1))
    reference = pack_padded_sequence(x, [3, 2])
    for lengths in (np.array([3, 2], np.int64), np.array([3, 2], np.uint8), (3, 2)):
        packed = pack_padded_sequence(x, lengths)
        np.testing.assert_array_equal(packed.data, reference.data)
        np.testing.assert_array_equal(packed.batch_sizes, reference.batch_sizes)


def test_lengths_accept_torch_tensor(rng, torch):
    x = rng.standard_normal((3, 2, 1))
    reference = pack_padded_sequence(x, [3, 2])
    packed = pack_padded_sequence(x, torch.tensor([3, 2]))
    np.testing.assert_array_equal(packed.data, reference.data)
    np.testing.assert_array_equal(packed.batch_sizes, reference.batch_sizes)


def test_packed_sequence_is_a_named_tuple(rng):
    packed = pack_sequence([np.ones((2, 1)), np.ones((3, 1))], enforce_sorted=False)
    data, batch_sizes, sorted_indices, unsorted_indices = packed
    assert packed._fields == ("data", "batch_sizes", "sorted_indices", "unsorted_indices")
    np.testing.assert_array_equal(sorted_indices, [1, 0])
    np.testing.assert_array_equal(unsorted_indices, [1, 0])
    rebuilt = PackedSequence(data, batch_sizes, sorted_indices)  # unsorted derived
    np.testing.assert_array_equal(rebuilt.unsorted_indices, [1, 0])


# ---------------------------------------------------------------- properties

lengths_lists = st.lists(st.integers(1, 6), min_size=1, max_size=6)


@given(lengths_lists, st.booleans(), st.integers(0, 3))
def test_pad_packed_inverts_pack_padded(lengths, batch_first, extra):
    rng = np.random.default_rng(len(lengths))
    N, T = len(lengths), max(lengths) + extra
    x = rng.standard_normal((N, T, 2) if batch_first else (T, N, 2))
    packed = pack_padded_sequence(x, lengths, batch_first, enforce_sorted=False)
    assert packed.data.shape == (sum(lengths), 2)
    padded, out_lengths = pad_packed_sequence(packed, batch_first, total_length=T)
    np.testing.assert_array_equal(out_lengths, lengths)
    mask = np.arange(T)[None, :] < np.array(lengths)[:, None]  # (N, T)
    if not batch_first:
        mask = mask.T
    np.testing.assert_array_equal(padded[mask], x[mask])
    assert np.all(padded[~mask] == 0)


@given(lengths_lists, st.sampled_from(["LSTM", "GRU", "RNN"]), st.booleans())
def test_packed_batch_equals_each_sequence_alone(lengths, kind, bidirectional):
    """A packed batch gives, per sequence, the output and final state of running that
    sequence alone (unbatched)."""
    rng = np.random.default_rng(sum(lengths))
    rnnkit.manual_seed(3)
    layer = getattr(rnnkit.nn, kind)(2, 3, num_layers=2, bidirectional=bidirectional,
                                     dtype=np.float64)
    seqs = [rng.standard_normal((n, 2)) for n in lengths]
    output, state = layer(pack_sequence(seqs, enforce_sorted=False))
    h_n = state[0] if kind == "LSTM" else state
    for b, (seq, alone) in enumerate(zip(seqs, unpack_sequence(output))):
        out_alone, state_alone = layer(seq)
        h_alone = state_alone[0] if kind == "LSTM" else state_alone
        assert_close(alone, out_alone, 1e-12, 1e-14, f"output of sequence {b}")
        assert_close(h_n[:, b], h_alone, 1e-12, 1e-14, f"h_n of sequence {b}")
        if kind == "LSTM":
            assert_close(state[1][:, b], state_alone[1], 1e-12, 1e-14, f"c_n of {b}")


@given(lengths_lists, st.randoms(use_true_random=False))
def test_shuffling_the_batch_shuffles_h_n(lengths, random):
    rng = np.random.default_rng(len(lengths))
    rnnkit.manual_seed(4)
    lstm = rnnkit.nn.LSTM(2, 3, bidirectional=True, dtype=np.float64)
    N, T = len(lengths), max(lengths)
    x = rng.standard_normal((N, T, 2))
    perm = list(range(N))
    random.shuffle(perm)
    _, (h, c) = lstm(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    _, (h_p, c_p) = lstm(pack_padded_sequence(x[perm], np.array(lengths)[perm],
                                              batch_first=True, enforce_sorted=False))
    assert_close(h_p, h[:, perm], 1e-12, 1e-14)
    assert_close(c_p, c[:, perm], 1e-12, 1e-14)


@given(st.sampled_from(["LSTM", "GRU", "RNN"]), st.integers(1, 5))
def test_batch_of_one_equals_unbatched(kind, L):
    rng = np.random.default_rng(L)
    rnnkit.manual_seed(5)
    layer = getattr(rnnkit.nn, kind)(2, 3, bidirectional=True, dtype=np.float64)
    x = rng.standard_normal((L, 2))
    out, state = layer(x)
    out_b, state_b = layer(x[:, None])
    assert_close(out, out_b[:, 0], 1e-14, 1e-15)
    h, h_b = (state[0], state_b[0]) if kind == "LSTM" else (state, state_b)
    assert_close(h, h_b[:, 0], 1e-14, 1e-15)


def test_packed_in_gives_packed_out_with_same_indices(rng, torch, tr):
    torch.manual_seed(0)
    theirs, ours = build_pair(torch, "GRU", np.float64, input_size=2, hidden_size=3)
    x = rng.standard_normal((4, 3, 2))
    lengths = [2, 4, 3]
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    out, _ = ours(packed)
    out_t, _ = theirs(tr.pack_padded_sequence(torch.tensor(x), lengths, enforce_sorted=False))
    assert isinstance(out, PackedSequence)
    _same_packed(out, out_t, rtol=1e-12)
    np.testing.assert_array_equal(out.batch_sizes, packed.batch_sizes)
    np.testing.assert_array_equal(out.sorted_indices, packed.sorted_indices)
    np.testing.assert_array_equal(out.unsorted_indices, packed.unsorted_indices)


def test_packing_is_differentiable(rng, torch, tr):
    """Gradients flow through pack/pad/unpad to the input, as torch's do."""
    x = rng.standard_normal((4, 3, 2))
    lengths = [2, 4, 3]
    w = rng.standard_normal((5, 3, 2))

    def f(_, x):
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        padded, _ = pad_packed_sequence(packed, total_length=5, padding_value=2.0)
        return (padded * w).sum() + sum((s ** 2).sum() for s in unpad_sequence(x, lengths))

    dx = rnnkit.grad(f, argnums=1)(None, x)
    x_t = torch.tensor(x, requires_grad=True)
    packed_t = tr.pack_padded_sequence(x_t, lengths, enforce_sorted=False)
    padded_t, _ = tr.pad_packed_sequence(packed_t, total_length=5, padding_value=2.0)
    # torch's unpad_sequence transposes its argument in place: give it a copy
    loss_t = (padded_t * torch.tensor(w)).sum() + sum(
        (s ** 2).sum() for s in tr.unpad_sequence(x_t.clone(), torch.tensor(lengths)))
    loss_t.backward()
    assert_close(dx, to_numpy(x_t.grad), 1e-12, 1e-14)


# ---------------------------------------------------------------- integer and bool sequences
# torch packs and pads any dtype (token ids padded before an Embedding, masks) and keeps
# it; so does rnnkit. The recurrent layers themselves take float input only.

SEQUENCE_DTYPES = [np.int64, np.int32, np.uint8, np.bool_, np.float16]


def _sequences(rng, dtype, lengths, features=()):
    high = 2 if dtype == np.bool_ else 100
    return [rng.integers(0, high, size=(n,) + features).astype(dtype) for n in lengths]


@pytest.mark.parametrize("dtype", SEQUENCE_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("padding_value", [0, 7, 0.5])
def test_integer_and_bool_sequences_pack_and_pad_as_torch(dtype, batch_first, enforce_sorted,
                                                          padding_value, rng, torch, tr):
    lengths = [4, 3, 3, 1] if enforce_sorted else [3, 4, 1, 3]
    seqs = _sequences(rng, dtype, lengths, (2,))
    padded = pad_sequence(seqs, batch_first=batch_first, padding_value=padding_value)
    padded_t = tr.pad_sequence([torch.from_numpy(s) for s in seqs], batch_first=batch_first,
                               padding_value=padding_value)
    assert padded.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(padded, padded_t.numpy())

    packed = pack_padded_sequence(padded, lengths, batch_first, enforce_sorted)
    packed_t = tr.pack_padded_sequence(padded_t, torch.tensor(lengths), batch_first,
                                       enforce_sorted)
    assert packed.data.dtype == np.dtype(dtype)
    _same_packed(packed, packed_t)

    out, out_lengths = pad_packed_sequence(packed, batch_first, padding_value, total_length=6)
    out_t, lengths_t = tr.pad_packed_sequence(packed_t, batch_first, padding_value, 6)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, out_t.numpy())
    np.testing.assert_array_equal(out_lengths, lengths_t.numpy())

    seq_packed = pack_sequence(seqs, enforce_sorted=enforce_sorted)
    _same_packed(seq_packed, tr.pack_sequence([torch.from_numpy(s) for s in seqs],
                                              enforce_sorted=enforce_sorted))
    for ours, theirs in zip(unpack_sequence(seq_packed), seqs, strict=True):
        assert ours.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(ours, theirs)
    for ours, theirs in zip(unpad_sequence(padded, lengths, batch_first), seqs, strict=True):
        np.testing.assert_array_equal(ours, theirs)


@given(lengths_lists, st.booleans(), st.sampled_from(SEQUENCE_DTYPES))
def test_integer_sequences_survive_pack_and_pad(lengths, batch_first, dtype):
    # no torch needed: packing then padding gives back every sequence, exactly, in its dtype
    rng = np.random.default_rng(len(lengths))
    seqs = _sequences(rng, dtype, lengths)
    packed = pack_sequence(seqs, enforce_sorted=False)
    assert packed.data.dtype == np.dtype(dtype)
    assert packed.data.shape == (sum(lengths),)
    padded, out_lengths = pad_packed_sequence(packed, batch_first=batch_first)
    assert out_lengths.tolist() == list(lengths)
    for b, seq in enumerate(seqs):
        row = padded[b] if batch_first else padded[:, b]
        np.testing.assert_array_equal(row[:len(seq)], seq)
        assert not row[len(seq):].any()


def test_recurrent_layers_still_refuse_integer_input():
    packed = pack_padded_sequence(np.ones((3, 2, 4), np.int64), [3, 2])
    with pytest.raises(TypeError, match=r"input\.data must be a float32 or float64 array, "
                                        r"got int64"):
        rnnkit.nn.LSTM(4, 5)(packed)


def test_non_numeric_sequences_are_refused():
    with pytest.raises(TypeError, match=r"input must be a numeric or bool array, got <U1"):
        pack_padded_sequence(np.array([["a", "b"]]), [1, 1])
