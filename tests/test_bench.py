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
