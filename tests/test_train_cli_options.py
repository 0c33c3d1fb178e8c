"""The layers' cell options through `rnnkit train`, the models and the estimators:
``--layer-norm``, ``--recurrent-dropout P``, ``--zoneout P`` and ``--peepholes`` reach
the recurrent layer, the saved model keeps them, bad values are one clear error, and
the defaults change nothing (docs/cell_options.md).

Every run trains a tiny model (hidden size 4, one layer, one epoch) on 24 tiny
synthetic series written as a .ts file, so each takes well under a second."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

import rnnkit
from rnnkit.cli import main
from rnnkit.commands import train as train_command
from rnnkit.models import SequenceClassifier, SequenceRegressor

from helpers import require

TINY = ["--hidden-size", "4", "--num-layers", "1", "--epochs", "1", "--batch-size", "8",
        "--seed", "1"]
OPTION_PARAMETERS = {"layer_norm": "rnn.weight_ln_ih_l0", "peepholes": "rnn.weight_ph_l0"}


@pytest.fixture(scope="module")
def data_extra():
    for module in ("aeon", "matplotlib", "tqdm"):
        require(module)


def run_cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def synthetic(n: int = 24, seed: int = 0):
    """``n`` series of 2 channels and 5 to 9 steps; class "up" drifts upwards."""
    rng = np.random.default_rng(seed)
    series, labels = [], []
    for k in range(n):
        s = rng.standard_normal((int(rng.integers(5, 10)), 2))
        label = "up" if k % 2 else "down"
        if label == "up":
            s += np.linspace(0, 2, len(s))[:, None]
        series.append(s)
        labels.append(label)
    return series, labels


def write_ts(path: Path, series, labels) -> None:
    lines = ["@problemName tiny", "@timeStamps false", "@missing false", "@univariate false",
             "@dimensions 2", "@equalLength false", "@classLabel true down up", "@data"]
    for s, label in zip(series, labels):
        lines.append(":".join(",".join(repr(float(v)) for v in s[:, c]) for c in range(2))
                     + f":{label}")
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def tiny_ts(tmp_path_factory, data_extra):
    folder = tmp_path_factory.mktemp("tiny")
    write_ts(folder / "Tiny_TRAIN.ts", *synthetic(24, 0))
    write_ts(folder / "Tiny_TEST.ts", *synthetic(10, 1))
    return folder / "Tiny_TRAIN.ts"


def train(tiny_ts, out: Path, *flags) -> tuple[str, dict]:
    """One tiny run; its stdout and its metrics.json."""
    code, stdout, stderr = run_cli("train", "--data", tiny_ts, "--out", out, *TINY, *flags)
    assert code == 0, stderr
    return stdout, json.loads((out / "metrics.json").read_text())


def saved_config(path: Path) -> dict:
    data = path.read_bytes()
    header = json.loads(data[8: 8 + int.from_bytes(data[:8], "little")])
    return json.loads(header["__metadata__"]["config"])


@pytest.fixture(scope="module")
def default_run(tiny_ts, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "default"
    stdout, metrics = train(tiny_ts, out)
    return out, stdout, metrics


# ---------------------------------------------------------------- each flag reaches the layer

CASES = [
    (["--layer-norm"], {"layer_norm": True}),
    (["--recurrent-dropout", "0.25"], {"recurrent_dropout": 0.25}),
    (["--zoneout", "0.1"], {"zoneout": 0.1}),
    (["--peepholes"], {"peepholes": True}),
    (["--layer-norm", "--recurrent-dropout", "0.25", "--zoneout", "0.1", "--peepholes"],
     {"layer_norm": True, "recurrent_dropout": 0.25, "zoneout": 0.1, "peepholes": True}),
]


@pytest.mark.parametrize("flags, options", CASES, ids=["layer-norm", "recurrent-dropout",
                                                        "zoneout", "peepholes", "all"])
def test_flag_reaches_the_layer_and_the_saved_model(tiny_ts, tmp_path, default_run, flags,
                                                    options):
    out = tmp_path / "run"
    stdout, metrics = train(tiny_ts, out, *flags)
    off = {"layer_norm": False, "recurrent_dropout": 0.0, "zoneout": 0.0, "peepholes": False}
    # the run's recorded settings: the options given, the others off
    assert {k: metrics["settings"][k] for k in off} == {**off, **options}
    # the printed model line names each option that is set, with its value
    model_line = next(line for line in stdout.splitlines() if line.startswith("LSTM("))
    for key, value in options.items():
        assert f"{key}={value}" in model_line, model_line
    # the saved file: its config holds exactly the options set, and the weights hold
    # the options' parameters (so the layer that trained had them)
    config = saved_config(out / "model.safetensors")
    assert {k: config[k] for k in off if k in config} == options
    state = dict(rnnkit.load(out / "model.safetensors"))
    for key, name in OPTION_PARAMETERS.items():
        assert (name in state) == (key in options), name
    # it reloads with the options on its layer
    model = rnnkit.load_module(out / "model.safetensors")
    assert isinstance(model, SequenceClassifier)
    for key, value in {**off, **options}.items():
        assert getattr(model.rnn, key) == value, key
    # and the option changed the training: same seed, other weights than the default's
    default = dict(rnnkit.load(default_run[0] / "model.safetensors"))
    assert not np.array_equal(state["fc.weight"], default["fc.weight"])


def test_options_with_gru_and_rnn(tiny_ts, tmp_path):
    for model in ("gru", "rnn"):
        out = tmp_path / model
        stdout, _ = train(tiny_ts, out, "--model", model, "--layer-norm", "--zoneout", "0.2")
        loaded = rnnkit.load_module(out / "model.safetensors")
        assert type(loaded.rnn).__name__ == model.upper()
        assert loaded.rnn.layer_norm is True and loaded.rnn.zoneout == 0.2
        assert "layer_norm=True, zoneout=0.2" in stdout


def test_default_run_is_unchanged(default_run):
    """No flags: the layer has no option on, the saved config is the one written before
    the options existed (no new keys), the weights are torch's names only."""
    out, stdout, metrics = default_run
    config = saved_config(out / "model.safetensors")
    assert not {"layer_norm", "recurrent_dropout", "zoneout", "peepholes"} & set(config)
    state = dict(rnnkit.load(out / "model.safetensors"))
    assert sorted(state) == sorted(["rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0",
                                    "rnn.bias_hh_l0", "rnn.weight_ih_l0_reverse",
                                    "rnn.weight_hh_l0_reverse", "rnn.bias_ih_l0_reverse",
                                    "rnn.bias_hh_l0_reverse", "fc.weight", "fc.bias"])
    model_line = next(line for line in stdout.splitlines() if line.startswith("LSTM("))
    for key in ("layer_norm", "recurrent_dropout", "zoneout", "peepholes"):
        assert key not in model_line
    assert metrics["settings"]["layer_norm"] is False
    assert metrics["settings"]["zoneout"] == 0.0


def test_options_given_as_off_train_the_default_run_bit_for_bit(tiny_ts, tmp_path,
                                                                default_run):
    """Options spelled out as off take the default's path: the same weights, bit for bit
    (no extra random draws, no other kernels)."""
    out = tmp_path / "off"
    train(tiny_ts, out, "--no-layer-norm", "--recurrent-dropout", "0", "--zoneout", "0",
          "--no-peepholes")
    off = dict(rnnkit.load(out / "model.safetensors"))
    default = dict(rnnkit.load(default_run[0] / "model.safetensors"))
    assert off.keys() == default.keys()
    for name in off:
        np.testing.assert_array_equal(off[name], default[name], err_msg=name)
    assert saved_config(out / "model.safetensors") == saved_config(
        default_run[0] / "model.safetensors")


def test_resume_keeps_the_options(tiny_ts, tmp_path):
    out = tmp_path / "run"
    code, _, stderr = run_cli("train", "--data", tiny_ts, "--out", out, *TINY[:-4],
                              "--epochs", "2", "--seed", "1", "--zoneout", "0.1",
                              "--stop-after-epoch", "1")
    assert code == 0, stderr
    code, _, stderr = run_cli("train", "--resume", out, "--zoneout", "0.2")
    assert code == 2 and "--zoneout 0.2 differs from the run being resumed" in stderr
    code, _, stderr = run_cli("train", "--resume", out)
    assert code == 0, stderr
    assert rnnkit.load_module(out / "model.safetensors").rnn.zoneout == 0.1


# ---------------------------------------------------------------- bad flags: one clear error


def test_peepholes_without_an_lstm_is_a_clear_error(tiny_ts, tmp_path):
    for model in ("gru", "rnn"):
        code, stdout, stderr = run_cli("train", "--data", tiny_ts, "--out", tmp_path / model,
                                       *TINY, "--model", model, "--peepholes")
        assert code == 2, (stdout, stderr)
        assert stderr.count("\n") == 1, stderr
        assert stderr.startswith("rnnkit train: --peepholes needs --model lstm"), stderr
        assert f"--model {model}" in stderr
        assert not (tmp_path / model).exists()  # refused before any work


@pytest.mark.parametrize("flag", ["--recurrent-dropout", "--zoneout"])
@pytest.mark.parametrize("value", ["1", "1.5", "-0.1", "nan", "lots"])
def test_probability_out_of_range_is_an_argparse_error(flag, value, tmp_path):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_:
        main(["train", "--out", str(tmp_path / "o"), flag, value])
    assert exit_.value.code == 2
    last = err.getvalue().strip().splitlines()[-1]
    assert last.startswith(f"rnnkit train: error: argument {flag}: expected a"), last
    assert value in last


# ---------------------------------------------------------------- models and save / load


def test_sequence_models_keep_the_options_through_save_and_load(tmp_path):
    options = {"layer_norm": True, "recurrent_dropout": 0.3, "zoneout": 0.05,
               "peepholes": True}
    for model in (SequenceClassifier(3, 4, hidden_size=5, num_layers=2, **options),
                  SequenceRegressor(3, hidden_size=5, **options)):
        for key, value in options.items():
            assert getattr(model.rnn, key) == value
            assert model.config()[key] == value
        path = tmp_path / f"{type(model).__name__}.safetensors"
        rnnkit.save(model, path)
        loaded = rnnkit.load_module(path)
        assert type(loaded) is type(model)
        for key, value in options.items():
            assert getattr(loaded.rnn, key) == value, key
        assert loaded.state_dict().keys() == model.state_dict().keys()
        x = np.random.default_rng(0).standard_normal((2, 6, 3)).astype(np.float32)
        model.eval(), loaded.eval()
        np.testing.assert_array_equal(loaded(x, lengths=[6, 3]), model(x, lengths=[6, 3]))


def test_an_old_config_without_the_options_still_loads(tmp_path):
    """A file written before the options existed: its config has none of their keys."""
    model = SequenceClassifier(3, 2, hidden_size=4)
    assert not set(train_command._CELL_OPTIONS) & set(model.config())
    path = tmp_path / "old.safetensors"
    rnnkit.save(model, path)
    loaded = rnnkit.load_module(path)
    assert (loaded.rnn.layer_norm, loaded.rnn.recurrent_dropout, loaded.rnn.zoneout,
            loaded.rnn.peepholes) == (False, 0.0, 0.0, False)


def test_models_refuse_bad_options():
    with pytest.raises(ValueError, match="peepholes"):
        SequenceClassifier(3, 2, model="gru", peepholes=True)
    with pytest.raises(ValueError, match="zoneout"):
        SequenceRegressor(3, zoneout=1.0)
    with pytest.raises(ValueError, match="recurrent_dropout"):
        SequenceClassifier(3, 2, recurrent_dropout=-0.5)


# ---------------------------------------------------------------- estimators


def test_estimators_pass_the_options_to_the_layer():
    pytest.importorskip("aeon")
    from rnnkit.estimators import RNNClassifier, RNNRegressor

    rng = np.random.default_rng(0)
    X = rng.standard_normal((16, 2, 8))
    y = np.array(["a", "b"] * 8)
    small = {"hidden_size": 4, "num_layers": 1, "epochs": 1, "batch_size": 8,
             "random_state": 0}
    options = {"layer_norm": True, "recurrent_dropout": 0.2, "zoneout": 0.1,
               "peepholes": True}
    clf = RNNClassifier(**small, **options).fit(X, y)
    assert clf.get_params()["zoneout"] == 0.1
    for key, value in options.items():
        assert getattr(clf.model_.rnn, key) == value, key
    assert clf.model_.config()["recurrent_dropout"] == 0.2
    assert clf.predict_proba(X).shape == (16, 2)
    reg = RNNRegressor(**small, model="gru", layer_norm=True, zoneout=0.3).fit(X, X.mean((1, 2)))
    assert reg.model_.rnn.layer_norm is True and reg.model_.rnn.zoneout == 0.3
    assert reg.model_.rnn.peepholes is False
    with pytest.raises(ValueError, match="peepholes"):
        RNNClassifier(**small, model="gru", peepholes=True).fit(X, y)
    # off by default, as in rnnkit train
    plain = RNNClassifier(**small).fit(X, y)
    assert not set(train_command._CELL_OPTIONS) & set(plain.model_.config())
