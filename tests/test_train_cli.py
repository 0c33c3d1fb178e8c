"""`rnnkit train` and `rnnkit predict` end to end, through `rnnkit.cli.main`.

A small configuration (hidden size 16, 3 epochs, dropout and input noise so that
both random generators matter) trains on JapaneseVowels in a couple of seconds.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rnnkit
from rnnkit.cli import main
from rnnkit.data import load_dataset
from rnnkit.models import SequenceClassifier

from helpers import require

# with a validation split (not the default), so that its scores and the best epoch are tested
SMALL = ["--hidden-size", "16", "--batch-size", "32", "--dropout", "0.2", "--noise", "0.1",
         "--seed", "3", "--lr-decay", "0.9", "--val-fraction", "0.1"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_cli(*argv) -> tuple[int, str, str]:
    """``main(argv)`` with stdout and stderr captured (stderr is then not a terminal)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def weights(path: Path) -> dict:
    return dict(rnnkit.load(path))


def write_ts(path: Path, series, labels=None, classes=None) -> None:
    """A .ts file, written by hand: channels ':'-separated, the label last."""
    lines = ["# written by test_train_cli.py", "@problemName test", "@timeStamps false",
             "@missing false", f"@univariate {'true' if series[0].shape[1] == 1 else 'false'}",
             f"@dimensions {series[0].shape[1]}", "@equalLength false"]
    lines.append(f"@classLabel true {' '.join(classes)}" if labels is not None
                 else "@classLabel false")
    lines.append("@data")
    for k, s in enumerate(series):
        row = ":".join(",".join(repr(float(v)) for v in s[:, c]) for c in range(s.shape[1]))
        lines.append(row + (f":{labels[k]}" if labels is not None else ""))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="session")
def data_extra():
    """rnnkit[data]'s packages, which training needs: aeon (the data sets), matplotlib (the
    plots) and tqdm (the bar). Missing, the tests that train skip (fail under CI)."""
    for module in ("aeon", "matplotlib", "tqdm"):
        require(module)


needs_data_extra = pytest.mark.usefixtures("data_extra")


@pytest.fixture(scope="module")
def vowels(data_extra):
    return load_dataset("JapaneseVowels")


@pytest.fixture(scope="module")
def run3(tmp_path_factory, data_extra):
    """An uninterrupted 3-epoch run: ``(folder, exit code, stdout, stderr)``."""
    out = tmp_path_factory.mktemp("run") / "full"
    code, stdout, stderr = run_cli("train", "--out", out, "--epochs", "3", *SMALL)
    return out, code, stdout, stderr


# ---------------------------------------------------------------- outputs


def test_train_writes_every_output(run3):
    out, code, stdout, stderr = run3
    assert code == 0, stderr
    for name in ("model.safetensors", "metrics.json", "curves.png", "confusion.png",
                 "checkpoint.safetensors"):
        assert (out / name).is_file(), name
    for name in ("curves.png", "confusion.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000, name
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]  # no temporaries left


def test_progress_goes_to_stdout_once_per_epoch_and_no_bar_off_a_terminal(run3):
    _, _, stdout, stderr = run3
    epoch_lines = [line for line in stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epoch_lines] == ["1/3", "2/3", "3/3"]
    assert all("train loss" in line and "val loss" in line for line in epoch_lines)
    assert "test accuracy" in stdout and "wall time" in stdout
    assert stderr == ""  # stderr is not a terminal here: no tqdm bar


def test_metrics_json(run3, vowels):
    out = run3[0]
    m = json.loads((out / "metrics.json").read_text())
    assert m["classes"] == [str(k) for k in range(1, 10)]
    assert [r["epoch"] for r in m["epochs"]] == [1, 2, 3]
    for record in m["epochs"]:
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert np.isfinite(record[key]), key
        assert 0 <= record["train_accuracy"] <= 1 and 0 <= record["val_accuracy"] <= 1
    assert m["epochs"][-1]["train_loss"] < m["epochs"][0]["train_loss"]
    assert 1 <= m["best_epoch"] <= 3
    assert m["test_size"] == len(vowels[1]) == 370
    assert 0.5 < m["test_accuracy"] <= 1  # 3 small epochs already learn most of it
    assert m["sizes"]["train"] + m["sizes"]["validation"] == 270
    assert m["wall_time_seconds"] > 0
    assert set(m["versions"]) >= {"rnnkit", "numpy", "python"}
    assert m["versions"]["rnnkit"] == rnnkit.__version__
    assert m["settings"]["hidden_size"] == 16 and m["settings"]["epochs"] == 3


def test_saved_model_loads_and_predicts_with_the_reported_accuracy(run3, vowels):
    out = run3[0]
    m = json.loads((out / "metrics.json").read_text())
    state = rnnkit.load(out / "model.safetensors")
    assert "rnn.weight_ih_l0" in state and "fc.weight" in state
    model = rnnkit.load_module(out / "model.safetensors")
    assert isinstance(model, SequenceClassifier)
    assert model.classes == m["classes"] and model.rnn.hidden_size == 16
    assert model.mean is not None and model.std is not None
    test = vowels[1]
    predicted = model.predict(test.series)
    accuracy = np.mean(np.array(predicted) == test.labels)
    assert accuracy == pytest.approx(m["test_accuracy"], abs=1e-12)


# ---------------------------------------------------------------- resume


def test_resume_after_a_crash_gives_the_same_weights_bit_for_bit(run3, tmp_path):
    out = tmp_path / "crashed"
    code, stdout, _ = run_cli("train", "--out", out, "--epochs", "3", *SMALL,
                              "--stop-after-epoch", "1")
    assert code == 0 and "--resume" in stdout
    assert (out / "checkpoint.safetensors").exists() and not (out / "model.safetensors").exists()
    code, stdout, stderr = run_cli("train", "--resume", out)
    assert code == 0, stderr
    assert "resuming" in stdout and "epoch 2/3" in stdout and "epoch 1/3" not in stdout
    full = run3[0]
    for name in ("model.safetensors", "checkpoint.safetensors"):
        ours, theirs = weights(out / name), weights(full / name)
        assert ours.keys() == theirs.keys()
        for key in theirs:
            assert ours[key].dtype == theirs[key].dtype
            assert np.array_equal(ours[key], theirs[key]), (name, key)
    a = json.loads((out / "metrics.json").read_text())
    b = json.loads((full / "metrics.json").read_text())
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in a["epochs"]]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in b["epochs"]]
    assert a["test_accuracy"] == b["test_accuracy"]


def test_resume_with_more_epochs_continues_the_same_run(run3, tmp_path):
    out = tmp_path / "short"
    assert run_cli("train", "--out", out, "--epochs", "2", *SMALL)[0] == 0
    code, stdout, stderr = run_cli("train", "--resume", out, "--epochs", "3")
    assert code == 0, stderr
    ours, theirs = weights(out / "model.safetensors"), weights(run3[0] / "model.safetensors")
    assert all(np.array_equal(ours[k], theirs[k]) for k in theirs)


def test_resume_refuses_changed_settings(run3):
    code, _, stderr = run_cli("train", "--resume", run3[0], "--lr", "0.1")
    assert code == 2
    assert stderr.startswith("rnnkit train: --lr 0.1 differs from the run being resumed")


# ---------------------------------------------------------------- predict


def test_predict_on_a_ts_file(run3, vowels, tmp_path):
    out = run3[0]
    test = vowels[1]
    pick = np.arange(0, len(test), 10)  # 37 series of all classes
    series, labels = [test.series[i] for i in pick], test.labels[pick]
    path = tmp_path / "some_TEST.ts"
    write_ts(path, series, labels, classes=[str(k) for k in range(1, 10)])
    code, stdout, stderr = run_cli("predict", "--model", out / "model.safetensors",
                                   "--data", path)
    assert code == 0, stderr
    predicted = stdout.splitlines()
    model = rnnkit.load_module(out / "model.safetensors")
    assert predicted == model.predict(series)
    correct = int(np.sum(np.array(predicted) == labels))
    assert stderr.strip() == f"accuracy {100 * correct / len(pick):.2f}% ({correct}/{len(pick)})"

    unlabelled = tmp_path / "new.ts"
    write_ts(unlabelled, series)
    code, stdout, stderr = run_cli("predict", "--model", out, "--data", unlabelled)
    assert code == 0 and stdout.splitlines() == predicted and stderr == ""


def test_train_on_a_ts_file_finds_its_test_file(tmp_path, vowels):
    train, test = vowels
    classes = [str(k) for k in range(1, 10)]
    write_ts(tmp_path / "Mini_TRAIN.ts", train.series[::3], train.labels[::3], classes)
    write_ts(tmp_path / "Mini_TEST.ts", test.series[::5], test.labels[::5], classes)
    out = tmp_path / "run"
    code, stdout, stderr = run_cli("train", "--data", tmp_path / "Mini_TRAIN.ts", "--out", out,
                                   "--epochs", "1", "--hidden-size", "8")
    assert code == 0, stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["sizes"]["train"] + m["sizes"]["validation"] == 90
    assert m["test_size"] == 74 and m["data"] == "Mini_TRAIN.ts"


# ---------------------------------------------------------------- mistakes: one line, exit 2


def _fails(*argv) -> str:
    code, stdout, stderr = run_cli(*argv)
    assert code == 2, (stdout, stderr)
    assert stderr.count("\n") == 1, stderr  # one line
    return stderr


@needs_data_extra
def test_unknown_data_set_lists_known_ones(tmp_path):
    err = _fails("train", "--dataset", "NoSuchSet", "--out", tmp_path / "o")
    assert err.startswith("rnnkit train: unknown data set 'NoSuchSet'")
    assert "JapaneseVowels" in err and "--data FILE.ts" in err


@needs_data_extra
def test_unreadable_data_files(tmp_path):
    err = _fails("train", "--data", tmp_path / "missing.ts", "--out", tmp_path / "o")
    assert err == f"rnnkit train: data file not found: {tmp_path / 'missing.ts'}\n"
    garbage = tmp_path / "garbage.ts"
    garbage.write_text("this is not a time series file\n")
    err = _fails("train", "--data", garbage, "--out", tmp_path / "o")
    assert err.startswith(f"rnnkit train: cannot read {garbage} as a .ts file")
    broken = tmp_path / "broken.ts"
    broken.write_text("@problemName b\n@classLabel true a b\n@data\n1,2,oops:a\n")
    err = _fails("predict", "--model", tmp_path, "--data", broken)  # model checked first
    assert "model file not found" in err


@needs_data_extra
def test_labels_missing(tmp_path):
    path = tmp_path / "nolabels.ts"
    write_ts(path, [np.ones((4, 2)), np.zeros((3, 2))])
    err = _fails("train", "--data", path, "--out", tmp_path / "o")
    assert err.startswith(f"rnnkit train: {path} has no class labels")


def test_model_file_that_is_not_rnnkits(run3, tmp_path):
    not_model = tmp_path / "notes.safetensors"
    not_model.write_bytes(b"hello, this is not a model at all")
    data = tmp_path / "x.ts"
    write_ts(data, [np.ones((4, 12))])
    err = _fails("predict", "--model", not_model, "--data", data)
    assert err.startswith(f"rnnkit predict: {not_model} is not a model saved by rnnkit train")
    state_only = tmp_path / "weights.safetensors"
    rnnkit.save({"w": np.ones(3, np.float32)}, state_only)
    err = _fails("predict", "--model", state_only, "--data", data)
    assert err.startswith(f"rnnkit predict: {state_only} is not a model saved by rnnkit train")
    lstm = tmp_path / "lstm.safetensors"
    rnnkit.save(rnnkit.nn.LSTM(12, 4), lstm)
    err = _fails("predict", "--model", lstm, "--data", data)
    assert "holds an rnnkit LSTM, not a model saved by rnnkit train" in err
    wrong_width = tmp_path / "wide.ts"
    write_ts(wrong_width, [np.ones((4, 3))])
    err = _fails("predict", "--model", run3[0], "--data", wrong_width)
    assert "has 3 channels per step, but the model was trained on 12" in err


@needs_data_extra
def test_output_folder_that_cannot_be_written(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    err = _fails("train", "--out", blocker / "run")
    assert err.startswith(f"rnnkit train: cannot write to output folder {blocker / 'run'}")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        err = _fails("train", "--out", locked / "run")
        assert "cannot write to output folder" in err


def test_existing_run_and_missing_resume(run3, tmp_path):
    err = _fails("train", "--out", run3[0])
    assert "already holds a run; continue it with --resume" in err
    err = _fails("train", "--resume", tmp_path)
    assert "no checkpoint to resume" in err


def test_aeon_missing_says_what_to_install(tmp_path):
    script = ("import sys; sys.modules['aeon'] = None\n"
              "from rnnkit.cli import main\n"
              f"sys.exit(main(['train', '--out', {str(tmp_path / 'o')!r}]))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr == ("rnnkit train: rnnkit train needs aeon, which is not installed: "
                           "pip install 'rnnkit[data]'\n")
