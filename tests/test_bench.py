"""`rnnkit bench`: its timing loop, the JSON document, the table with absent peers, and
bad options. Nothing here times rnnkit (the bench measures; these tests check that it
measures what it says): the loop runs on a fake clock, the command on tiny cells."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import pytest

from rnnkit.cli import main
from rnnkit.commands import bench


class _FakeTime:
    """perf_counter advances only when a fake call says it took time; sleep is free."""

    def __init__(self):
        self.now = 0.0
        self.slept = []

    def perf_counter(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)


@pytest.fixture
def clock(monkeypatch):
    fake = _FakeTime()
    monkeypatch.setattr(bench, "time", fake)
    return fake


def test_frameworks_take_turns_in_blocks_with_a_warm_up(clock):
    order = []

    def call(name, seconds):
        def run():
            order.append(name)
            clock.now += seconds
        return run

    med = bench._time_interleaved({"a": call("a", 0.001), "b": call("b", 0.003)}, repeats=5,
                                  budget=10.0, block=2, settle=0.5, warm=0.0)
    assert med == {"a": pytest.approx(0.001), "b": pytest.approx(0.003)}
    # a turn is one warm-up call then up to `block` timed ones: 3 turns each for 5 timings
    assert order == ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3 + ["a"] * 2 + ["b"] * 2
    assert clock.slept == [0.5] * 6  # a pause before every turn


def test_median_ignores_an_outlier_and_budget_caps_slow_frameworks(clock):
    durations = iter([9.0] + [0.002, 0.002, 5.0, 0.002, 0.002, 0.002, 0.002, 0.002] * 3)
    slow_calls = []

    def spiky():
        clock.now += next(durations)

    def slow():
        slow_calls.append(1)
        clock.now += 2.0

    med = bench._time_interleaved({"spiky": spiky, "slow": slow}, repeats=6, budget=3.0,
                                  block=3, settle=0.0, warm=0.0)
    assert med["spiky"] == pytest.approx(0.002)  # the warm-up's 9 s and one 5 s spike
    assert med["slow"] == pytest.approx(2.0)
    # past its budget a framework stops once it has 3 timings: 1 turn = warm-up + 3 timed
    assert len(slow_calls) == 4


def _run_json(capsys, *extra):
    code = main(["bench", "--sizes", "seed", "--modes", "RNN", "--no-memory", "--no-compile",
                 "--repeats", "2", "--json", *extra])
    assert code == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.usefixtures("torch", "ort")  # the peers it times
def test_json_document(capsys, monkeypatch):
    monkeypatch.setattr(bench, "PAUSE", 0.0)
    monkeypatch.setattr(bench, "WARM", 0.0)
    doc = _run_json(capsys)
    assert doc["threads"] == 2 and doc["dtype"] == "float32" and doc["repeats"] == 2
    rows = {(r["size"], r["mode"], r["task"]): r for r in doc["rows"]}
    assert set(rows) == {("seed", "RNN", "infer"), ("seed", "RNN", "train")}
    for r in rows.values():
        assert r["rnnkit_ms"] > 0 and r["torch_ms"] > 0
        assert r["torch_ratio"] == pytest.approx(r["torch_ms"] / r["rnnkit_ms"])
    infer, train = rows["seed", "RNN", "infer"], rows["seed", "RNN", "train"]
    assert infer["ort_ratio"] == pytest.approx(infer["ort_ms"] / infer["rnnkit_ms"])
    assert train["ort_ms"] is None and "gemm_share" not in train  # ORT runs inference only
    assert 0 < infer["gemm_share"] <= 9.99
    assert doc["sgemm_gflops"] > 0
    for r in rows.values():  # the time over the FLOP bound at the run's own sgemm rate
        cell = bench._Cell("seed", "RNN", r["task"])
        bound_ms = bench._flops(cell) / (doc["sgemm_gflops"] * 1e9) * 1e3
        assert r["bound_ratio"] == pytest.approx(r["rnnkit_ms"] / bound_ms)
    ratios = [r["torch_ratio"] for r in rows.values()]
    assert doc["geomean_torch_ratio"] == pytest.approx(
        math.exp(sum(map(math.log, ratios)) / len(ratios)))
    assert "memory" not in doc and "compile" not in doc


def test_table_says_absent_for_missing_peers():
    script = textwrap.dedent("""
        import sys
        sys.modules["torch"] = None        # both peers unimportable
        sys.modules["onnxruntime"] = None
        from rnnkit.commands import bench
        bench.PAUSE = bench.WARM = 0.0
        from rnnkit.cli import main
        sys.exit(main(["bench", "--sizes", "seed", "--modes", "GRU", "--no-memory",
                       "--no-compile", "--repeats", "1"]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("sgemm 2048^3 on rnnkit's BLAS, 2 threads: ")  # the bound's rate
    assert lines[1].split()[:5] == ["cell", "rnnkit", "ms", "x", "bound"]
    infer = next(line for line in lines if line.startswith("seed GRU infer"))
    train = next(line for line in lines if line.startswith("seed GRU train"))
    assert infer.split()[5:7] == ["absent", "absentx"]  # torch ms, torch/rk
    assert float(infer.split()[4].rstrip("x")) > 0  # x bound
    assert train.count("absent") == 4  # torch and ORT columns
    assert float(infer.split()[3]) > 0  # rnnkit's own time is there
    assert "geometric mean: no peer" in done.stdout
    assert "note: torch is not installed" in done.stdout
    assert "note: onnxruntime (or onnx) is not installed" in done.stdout


@pytest.mark.parametrize("argv,message", [
    (["--sizes", "seed,huge"], "--sizes must name rows of the grid"),
    (["--modes", "LSTM,TRANSFORMER"], "--modes must be among LSTM, GRU, RNN"),
])
def test_bad_grid_options_exit_2(argv, message, capsys):
    assert main(["bench", "--no-memory", "--no-compile", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnkit bench: ") and message in err


@pytest.mark.parametrize("argv", [["--repeats", "0"], ["--repeats", "x"], ["--budget", "-1"]])
def test_bad_numbers_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", *argv])
    assert exit_info.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_flops_count_every_product_of_the_cell():
    # seed: T5 B3 I10 H20, 2 layers; LSTM G = 80; layer 1 reads H = 20 features
    infer = bench._flops(bench._Cell("seed", "LSTM", "infer"))
    assert infer == 2 * 5 * 3 * 80 * (10 + 20) + 2 * 5 * 3 * 80 * (20 + 20)
    assert bench._flops(bench._Cell("seed", "LSTM", "train")) == 3 * infer
    packed = bench._Cell("packed", "GRU", "infer")  # only the steps each sequence has
    assert bench._flops(packed) == pytest.approx(
        2 * packed.lengths.sum() * 768 * ((256 + 256) + (256 + 256)))


# ---------------------------------------------------------------- issue 11's cells


@pytest.fixture
def small_cells(monkeypatch):
    """The lengths cell on a tiny shape (its real one takes seconds a call); no pauses."""
    monkeypatch.setitem(bench.GRID, "lengths", (6, 4, 3, 5, 2, 1, True))
    monkeypatch.setattr(bench, "PAUSE", 0.0)
    monkeypatch.setattr(bench, "WARM", 0.0)


@pytest.mark.usefixtures("small_cells")
def test_stream_and_lengths_cells_in_the_json_and_the_table(capsys, torch, ort):
    argv = ["bench", "--sizes", "stream,lengths", "--modes", "GRU", "--no-memory",
            "--no-compile", "--repeats", "2"]
    assert main([*argv, "--json"]) == 0
    rows = {(r["size"], r["mode"], r["task"]): r
            for r in json.loads(capsys.readouterr().out)["rows"]}
    assert set(rows) == {("stream", "GRU", "infer"), ("lengths", "GRU", "infer"),
                         ("lengths", "GRU", "train")}  # a stream has no training step
    stream = rows["stream", "GRU", "infer"]
    assert stream["torch_ms"] > 0 and stream["ort_ms"] > 0
    assert "packed_ms" not in stream
    for task in ("infer", "train"):
        r = rows["lengths", "GRU", task]
        assert r["packed_ms"] > 0
        assert r["lengths_over_packed"] == pytest.approx(r["rnnkit_ms"] / r["packed_ms"])
    assert rows["lengths", "GRU", "infer"]["ort_ms"] > 0
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    at = next(k for k, line in enumerate(lines) if line.startswith("lengths GRU infer"))
    assert lines[at + 1].split()[:6] == ["lengths=", "over", "the", "same", "call", "on"]
    assert any(line.startswith("stream GRU infer") for line in lines)


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_stream_cell_peers_take_the_same_steps(tmp_path, torch, ort, mode):
    # each framework's call is one step from the state its previous call left
    import numpy as np

    cell = bench._Cell("stream", mode, "infer")
    calls = [cell.rnnkit_call(), cell.torch_call(torch),
             cell.ort_call(ort, str(tmp_path), torch)]
    outputs = []
    for _ in range(4):
        ours, theirs, ort_out = (call() for call in calls)
        assert ours.shape == (cell.B, cell.H)
        np.testing.assert_allclose(theirs.numpy()[0], ours, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ort_out[0], ours, rtol=1e-5, atol=1e-6)
        outputs.append(ours)
    assert not np.allclose(outputs[0], outputs[3])  # the state moved on: same input, new output


@pytest.mark.usefixtures("small_cells")
@pytest.mark.parametrize("task", ["infer", "train"])
def test_lengths_cell_compares_the_same_call(torch, task):
    import numpy as np

    from rnnkit.nn.utils.rnn import pad_packed_sequence

    cell = bench._Cell("lengths", "LSTM", task)
    assert sorted(cell.lengths.tolist()) != cell.lengths.tolist()[::-1]  # unsorted
    ours, packed = cell.rnnkit_call()(), cell.packed_call()()
    if task == "infer":
        padded = pad_packed_sequence(packed, total_length=cell.T)[0]  # output, as packed
        np.testing.assert_allclose(ours, padded, rtol=1e-6, atol=1e-7)
        theirs = cell.torch_call(torch)()
        np.testing.assert_allclose(theirs[0].numpy(), ours, rtol=1e-5, atol=1e-6)
    else:  # (loss, grads): the same loss and gradients either way
        assert ours[0] == pytest.approx(packed[0], rel=1e-5)
        for name, g in ours[1].items():
            np.testing.assert_allclose(g, packed[1][name], rtol=1e-4, atol=1e-5)


@pytest.mark.usefixtures("ort")
def test_options_table(capsys, monkeypatch, torch):
    """``--options-only``: one row per mode and task, each option set's time over the plain
    layer's, and the torch loop of benchmarks/ against the layer-norm LSTM's training step."""
    monkeypatch.setattr(bench, "PAUSE", 0.0)
    monkeypatch.setattr(bench, "WARM", 0.0)
    code = main(["bench", "--options-only", "--options-size", "seed", "--repeats", "1",
                 "--json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["rows"] == [] and "memory" not in doc and "compile" not in doc
    rows = {(r["mode"], r["task"]): r for r in doc["options"]}
    assert set(rows) == {(m, t) for m in ("LSTM", "GRU", "RNN") for t in ("infer", "train")}
    for (mode, task), r in rows.items():
        assert r["plain_ms"] > 0
        for name in ("layer_norm", "recurrent_dropout", "zoneout", "all"):
            assert r[f"{name}_over_plain"] > 0
        assert (r["peepholes_over_plain"] is not None) == (mode == "LSTM")
        has_loop = (mode, task) == ("LSTM", "train")
        assert (r["torch_loop_over_layer_norm"] is not None) == has_loop
        if has_loop:
            assert r["torch_loop_ms"] > 0


def test_options_size_must_be_unpacked():
    assert main(["bench", "--options-only", "--options-size", "packed"]) == 2
