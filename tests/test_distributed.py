"""More than one process: rnnkit.distributed and `rnnkit train` under a real
`mpirun -n 2`, and rnnkit.dask on a real local cluster of 2 worker processes.

The MPI tests skip (with the reason) only where MPI cannot start at all, and fail
instead under CI. A small float64 configuration (hidden size 8, 2-3 epochs, input
noise on, dropout off) trains in about a second per rank.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import rnnkit
from rnnkit import distributed as dist
from rnnkit.cli import main

from helpers import in_ci, require

SMALL = ["--hidden-size", "8", "--num-layers", "1", "--dtype", "float64", "--dropout", "0",
         "--noise", "0.2", "--batch-size", "20", "--seed", "5"]
TIMEOUT = 120  # seconds: a hang fails the test instead of stalling CI


# ---------------------------------------------------------------- a world of one


def test_a_plain_process_is_a_world_of_one_without_importing_mpi4py():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMI", "MV2_"))}
    code = textwrap.dedent("""
        import sys
        import numpy as np
        from rnnkit import distributed as dist
        dist.init()
        x = {"a": np.ones(3), "b": np.arange(4.0).reshape(2, 2)}
        y = dist.all_reduce(x)
        assert y["a"] is not x["a"] and np.array_equal(y["b"], x["b"]), y
        print(dist.get_rank(), dist.get_world_size(), "mpi4py" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "1", "False"]


def test_all_reduce_in_a_world_of_one_returns_new_arrays():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    for op in ("mean", "sum"):
        y = dist.all_reduce(x, op=op)
        assert y is not x and y.dtype == x.dtype and np.array_equal(y, x)
    grads = {"w": np.ones((2, 2)), "b": np.zeros(2, np.float32)}
    out = dist.all_reduce(grads)
    assert list(out) == ["w", "b"] and out["b"].dtype == np.float32
    assert all(out[k] is not grads[k] for k in grads)
    with pytest.raises(ValueError, match="op must be 'mean' or 'sum'"):
        dist.all_reduce(x, op="max")


@pytest.mark.parametrize("n", [0, 1, 5, 17, 32])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shard_splits_range_n_in_order(n, world):
    blocks = [dist.shard(n, r, world) for r in range(world)]
    assert np.array_equal(np.concatenate(blocks), np.arange(n))
    assert max(map(len, blocks)) - min(map(len, blocks)) <= 1
    assert np.array_equal(dist.shard(n), np.arange(n))  # this process: a world of one


def test_shard_refuses_a_rank_outside_the_world():
    with pytest.raises(ValueError, match="rank must be in"):
        dist.shard(4, 2, 2)


# ---------------------------------------------------------------- mpirun -n 2


@pytest.fixture(scope="module")
def mpirun():
    """The argv prefix of a real 2-rank mpirun (as root too, on 2 cores or fewer), after
    proving it can start; skips saying why where MPI cannot start, fails under CI."""
    require("mpi4py")
    here = Path(sys.executable).parent / "mpirun"
    exe = str(here) if here.exists() else shutil.which("mpirun")
    reason = "no mpirun next to this Python or on PATH (pip install -e '.[test]')"
    if exe is not None:
        argv = [exe, "--allow-run-as-root", "--oversubscribe", "-n", "2"]
        probe = [sys.executable, "-c", "from mpi4py import MPI; import sys; "
                 "sys.exit(MPI.COMM_WORLD.Get_size() != 2)"]
        try:
            out = subprocess.run(argv + probe, env=_mpi_env(), capture_output=True, text=True,
                                 timeout=TIMEOUT)
            if out.returncode == 0:
                return argv
            reason = f"mpirun -n 2 cannot start ({out.returncode}): {out.stderr.strip()[-800:]}"
        except subprocess.TimeoutExpired:
            reason = f"mpirun -n 2 did not start within {TIMEOUT} s"
    if in_ci():
        pytest.fail(f"CI must run MPI for real: {reason}", pytrace=False)
    print(reason)
    pytest.skip(reason)


def _mpi_env() -> dict:
    # as root too (CI is root); one BLAS thread per rank, as docs/distributed.md says
    return {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
            "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


def _run(argv, cwd=None) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    out = subprocess.run(argv, env=_mpi_env(), cwd=cwd, capture_output=True, text=True,
                         timeout=TIMEOUT)
    return out, time.perf_counter() - t0


def _rnnkit(*args) -> list[str]:
    return [sys.executable, "-m", "rnnkit", *map(str, args)]


def _weights(path: Path) -> dict:
    return dict(rnnkit.load(path))


def _assert_same_weights(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-9, atol=1e-12,
                                   err_msg=name)


def _train_here(*argv) -> str:
    """``rnnkit train`` in this process (a world of one), its stdout."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(["train", *map(str, argv)]) == 0
    return out.getvalue()


def test_the_library_under_two_ranks(mpirun, tmp_path):
    script = tmp_path / "lib.py"
    script.write_text(textwrap.dedent("""
        import numpy as np
        from rnnkit import distributed as dist, nn

        dist.init()
        rank, K = dist.get_rank(), dist.get_world_size()
        assert K == 2, K

        class Counting:  # counts the messages all_reduce sends
            def __init__(self, comm):
                self.comm, self.calls = comm, 0
            def Allreduce(self, *args, **kwargs):
                self.calls += 1
                return self.comm.Allreduce(*args, **kwargs)
            def __getattr__(self, name):
                return getattr(self.comm, name)

        dist._comm = counting = Counting(dist._comm)
        grads = {f"p{k}": np.full((k + 1, 3), rank + 1.0) for k in range(5)}
        grads["f32"] = np.full(4, 10.0 * rank, np.float32)
        mean = dist.all_reduce(grads)
        assert counting.calls == 1, counting.calls          # one flat buffer, not 6 messages
        assert all(np.all(mean[f"p{k}"] == 1.5) for k in range(5))
        assert mean["f32"].dtype == np.float32 and np.all(mean["f32"] == 5.0)
        assert np.all(grads["p0"] == rank + 1.0)            # the input is left alone
        total = dist.all_reduce(np.arange(3.0) * (rank + 1), op="sum")
        assert np.array_equal(total, [0.0, 3.0, 6.0]), total

        layer = nn.LSTM(3, 4, dtype=np.float64)
        for p in layer.parameters():
            p[...] = rank
        dist.broadcast_parameters(layer, root=1)
        assert all(np.all(p == 1) for p in layer.parameters())
        assert dist.shard(5).tolist() == ([0, 1, 2], [3, 4])[rank]
        print("ok", rank)
    """))
    out, _ = _run(mpirun + [sys.executable, str(script)])
    assert out.returncode == 0, out.stdout + out.stderr
    assert sorted(out.stdout.split()) == ["0", "1", "ok", "ok"]


def test_train_on_two_ranks_equals_one_process_only_rank_0_writes_and_resumes(mpirun,
                                                                              tmp_path):
    """Rank 0 and rank 1 start in folders of their own, each with the default --out
    (runs/<timestamp>, relative): rank 1's folder must stay empty. The run stops after
    epoch 1 and is resumed by a second `mpirun -n 2`; it ends with one process's weights."""
    args = [*SMALL, "--epochs", "2"]
    one = _train_here(*args, "--out", tmp_path / "one")
    rank0, rank1 = tmp_path / "rank0", tmp_path / "rank1"
    rank0.mkdir()
    rank1.mkdir()
    exe, flags = mpirun[0], mpirun[1:3]
    stop = [*args, "--stop-after-epoch", "1"]
    out, _ = _run([exe, *flags, "-n", "1", "--wdir", str(rank0), *_rnnkit("train", *stop),
                   ":", "-n", "1", "--wdir", str(rank1), *_rnnkit("train", *stop)])
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("stopped after epoch 1") == 1  # rank 0 alone prints
    (run,) = (rank0 / "runs").iterdir()
    assert [p.name for p in run.iterdir()] == ["checkpoint.safetensors"]
    out, _ = _run(mpirun + _rnnkit("train", "--resume", run), cwd=rank1)
    assert out.returncode == 0, out.stdout + out.stderr
    assert list(rank1.iterdir()) == []  # rank 1 wrote nothing, ever
    for name in ("model.safetensors", "metrics.json", "curves.png", "confusion.png",
                 "checkpoint.safetensors"):
        assert (run / name).is_file(), name
    _assert_same_weights(_weights(run / "model.safetensors"),
                         _weights(tmp_path / "one" / "model.safetensors"))
    # each line once, the same as one process's (but for the seconds)
    assert out.stdout.count("resuming") == 1
    lines = [line for line in out.stdout.splitlines() if line.startswith("epoch ")]
    want = [line for line in one.splitlines() if line.startswith("epoch ")]
    assert [x.rsplit("  ", 2)[0] for x in lines] == [x.rsplit("  ", 2)[0] for x in want[1:]]
    metrics = json.loads((run / "metrics.json").read_text())
    one_metrics = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert metrics["test_correct"] == one_metrics["test_correct"]


def test_bad_data_on_one_rank_ends_the_job_with_its_error(mpirun, tmp_path):
    bad = tmp_path / "bad_TRAIN.ts"
    _write_ts(bad, _series(5))  # no labels to train on
    exe, flags = mpirun[0], mpirun[1:3]
    out, seconds = _run([exe, *flags, "-n", "1", *_rnnkit("train", *SMALL), ":",
                         "-n", "1", *_rnnkit("train", *SMALL, "--data", bad)])
    assert out.returncode != 0
    assert seconds < 60
    assert f"rnnkit train: {bad} has no class labels" in out.stderr, out.stderr  # rank 1's
    assert "rank 1 of 2 failed" in out.stderr, out.stderr


def test_an_exception_on_one_rank_mid_training_ends_the_job(mpirun, tmp_path):
    """Rank 1 raises in its second epoch while rank 0 waits for it in the all-reduce."""
    script = tmp_path / "failing.py"
    script.write_text(textwrap.dedent("""
        import sys
        from rnnkit import distributed as dist
        from rnnkit.cli import main
        from rnnkit.commands import train

        real = train._training_pass

        def failing(job, data, settings, epoch):
            if dist.get_rank() == 1 and epoch == 2:
                raise RuntimeError("injected failure on rank 1")
            return real(job, data, settings, epoch)

        train._training_pass = failing
        sys.exit(main(["train", *sys.argv[1:]]))
    """))
    out, seconds = _run(mpirun + [sys.executable, str(script), *SMALL, "--epochs", "2",
                                  "--out", tmp_path / "run"])
    assert out.returncode != 0
    assert seconds < 60
    assert "RuntimeError: injected failure on rank 1" in out.stderr, out.stderr
    assert "rank 1 of 2 failed" in out.stderr
    assert not (tmp_path / "run" / "model.safetensors").exists()


# ---------------------------------------------------------------- Dask


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    from rnnkit.models import SequenceClassifier

    rnnkit.manual_seed(0)
    model = SequenceClassifier(3, 4, hidden_size=12, num_layers=2, classes=list("abcd"),
                               mean=[0.1, 0.0, -0.2], std=[1.0, 2.0, 0.5])
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    rnnkit.save(model, path)
    return path


def _series(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((int(L), 3)) for L in rng.integers(3, 30, n)]


def _write_ts(path: Path, series) -> None:
    lines = ["@problemName test", "@timeStamps false", "@missing false", "@univariate false",
             "@dimensions 3", "@equalLength false", "@classLabel false", "@data"]
    lines += [":".join(",".join(repr(float(v)) for v in s[:, c]) for c in range(3))
              for s in series]
    path.write_text("\n".join(lines) + "\n")


def _predict_cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["predict", *map(str, argv)])
    return code, out.getvalue(), err.getvalue()


def test_dask_predict_on_two_worker_processes_equals_one_process(saved_model, tmp_path):
    require("distributed")
    require("aeon")
    from rnnkit import dask as rdask
    from rnnkit.commands.predict import load_classifier

    model = load_classifier(saved_model)
    series = _series(1500)  # 6 batches of 256: blocks on both workers
    ts = tmp_path / "series.ts"
    _write_ts(ts, series[:600])
    code, plain, _ = _predict_cli("--model", saved_model, "--data", ts, "--proba")
    assert code == 0
    with rdask.connect("local", n_workers=2) as client:
        info = client.scheduler_info(n_workers=-1)["workers"]
        assert len(info) == 2
        pids = client.run(os.getpid)
        assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()
        proba = rdask.predict_proba(saved_model, series, client)
        np.testing.assert_array_equal(proba, model.predict_proba(series))  # bit for bit
        assert rdask.predict(saved_model, series[:300], client) == model.predict(series[:300])
        # each worker loaded the model once, for all its tasks
        loaded = client.run(lambda: len(__import__("rnnkit.dask").dask._models))
        assert set(loaded.values()) == {1}
        code, on_dask, _ = _predict_cli("--model", saved_model, "--data", ts, "--proba",
                                        "--dask", client.scheduler.address)
    assert code == 0 and on_dask == plain
    assert plain.count("\n") == 600


def test_dask_unreachable_scheduler_is_a_clear_error_within_the_timeout(saved_model, tmp_path):
    require("distributed")
    require("aeon")
    ts = tmp_path / "series.ts"
    _write_ts(ts, _series(3))
    t0 = time.perf_counter()
    code, out, err = _predict_cli("--model", saved_model, "--data", ts,
                                  "--dask", "tcp://127.0.0.1:9", "--dask-timeout", "1")
    assert time.perf_counter() - t0 < 10
    assert code == 2 and out == ""
    assert "cannot reach a Dask scheduler at tcp://127.0.0.1:9 within 1 s" in err, err
