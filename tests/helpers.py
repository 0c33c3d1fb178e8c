"""Shared test helpers: optional test dependencies, tolerances of the contract and the
two-namespace builder."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import rnnkit

INSTALL = "pip install -e '.[test]'"  # installs every optional package the tests use


def in_ci() -> bool:
    """True when the ``CI`` environment variable is set (to anything but "", "0", "false")."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def require(module: str):
    """Import ``module``, an optional package some tests need (torch, the reference;
    onnx, onnxruntime, aeon, matplotlib, tqdm). Missing, the test skips, except under CI,
    where it fails: a CI run that skipped the reference would pass having checked nothing.
    A package that is installed but fails to import is an error either way."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name != module:  # the package is there but broken: let it show
            raise
    if in_ci():
        pytest.fail(
            f"{module} is not installed, and CI is set, so the tests that need it "
            f"fail instead of skipping: {INSTALL}",
            pytrace=False,
        )
    pytest.skip(f"{module} is not installed: {INSTALL}")


# the contract's tolerances (API.md): float64 to 1e-9, float32 forward 1e-5, gradients 1e-4
RTOL = {np.float64: 1e-9, np.float32: 1e-5}
ATOL = {np.float64: 1e-12, np.float32: 1e-6}
GRAD_RTOL = {np.float64: 1e-9, np.float32: 1e-4}
GRAD_ATOL = {np.float64: 1e-11, np.float32: 1e-5}


def assert_close(actual, expected, rtol=1e-9, atol=1e-12, err_msg=""):
    """Shape, then dtype (when both are NumPy arrays or scalars of a floating dtype, the
    same one: a float32 layer's float64 h_n or gradient fails), then values. A Python float
    (``loss_t.item()``) has no dtype to compare."""
    dtypes = [
        x.dtype if isinstance(x, (np.ndarray, np.generic)) else None for x in (actual, expected)
    ]
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{err_msg}: shape {actual.shape} != {expected.shape}"
    if all(d is not None and np.issubdtype(d, np.floating) for d in dtypes):
        assert dtypes[0] == dtypes[1], f"{err_msg}: dtype {dtypes[0]} != {dtypes[1]}"
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=err_msg)


def to_numpy(t):
    return t.detach().cpu().numpy()


def torch_dtype(torch, dtype):
    return torch.float64 if dtype == np.float64 else torch.float32


def build_pair(torch, kind: str, dtype, **kwargs):
    """The same layer in torch and in rnnkit, with torch's weights copied into rnnkit's."""
    theirs = getattr(torch.nn, kind)(**kwargs, dtype=torch_dtype(torch, dtype))
    ours = getattr(rnnkit.nn, kind)(**kwargs, dtype=dtype)
    ours.load_state_dict({k: to_numpy(v) for k, v in theirs.state_dict().items()})
    return theirs, ours


def stack_args(rng, mode, num_layers, D, I, H, P, bias, L, N, lengths, dtype):
    """A stack's plain arguments, ``(x, h_0, c_0, flat, batch_sizes)``: weights drawn
    U(-0.5, 0.5) in the flat order of ``_modes.weight_names`` (``P != H``: with W_hr),
    x, h_0 and c_0 (read by the LSTM only) standard normal; with ``lengths``, packed
    input: rows sorted by decreasing length, padding zero."""
    from rnnkit._modes import MODES, weight_names

    G = MODES[mode].gates * H
    flat = []
    for layer in range(num_layers):
        for _ in range(D):
            I_k = I if layer == 0 else D * P
            shapes = {"weight_ih": (G, I_k), "weight_hh": (G, P), "bias_ih": (G,),
                      "bias_hh": (G,), "weight_hr": (P, H)}
            flat += [rng.uniform(-0.5, 0.5, shapes[n]).astype(dtype)
                     for n in weight_names(bias, P != H)]
    K = num_layers * D
    x = rng.standard_normal((L, N, I)).astype(dtype)
    h_0 = rng.standard_normal((K, N, P)).astype(dtype)
    c_0 = rng.standard_normal((K, N, H)).astype(dtype)
    batch_sizes = None
    if lengths is not None:
        lengths = np.sort(np.asarray(lengths))[::-1]
        batch_sizes = (lengths[None, :] > np.arange(L)[:, None]).sum(axis=1).astype(np.int64)
        x = x * (np.arange(L)[:, None] < lengths[None, :])[:, :, None].astype(dtype)
    return x, h_0, c_0, flat, batch_sizes


def run_python(code: str, timeout: int, **env) -> str:
    """Run ``code`` in a fresh Python that imports from this folder (the test modules),
    with ``env`` added to the environment (``NUMBA_DISABLE_JIT="1"``: the kernels as plain
    Python); it must exit 0. Returns its standard output."""
    here = os.path.dirname(os.path.abspath(__file__))
    code = f"import sys\nsys.path.insert(0, {here!r})\n" + textwrap.dedent(code)
    done = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, **env),
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def draw_lengths(data, L, N):
    """None (padded input) or, drawn by hypothesis, N lengths in [1, L], the first L."""
    from hypothesis import strategies as st

    if not data.draw(st.booleans()):
        return None
    lengths = data.draw(st.lists(st.integers(1, L), min_size=N, max_size=N))
    lengths[0] = L
    return lengths
