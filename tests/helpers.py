"""Shared test helpers: tolerances of the contract and the two-namespace builder."""

from __future__ import annotations

import numpy as np

import rnnkit

# the contract's tolerances (API.md): float64 to 1e-9, float32 forward 1e-5, gradients 1e-4
RTOL = {np.float64: 1e-9, np.float32: 1e-5}
ATOL = {np.float64: 1e-12, np.float32: 1e-6}
GRAD_RTOL = {np.float64: 1e-9, np.float32: 1e-4}
GRAD_ATOL = {np.float64: 1e-11, np.float32: 1e-5}


def assert_close(actual, expected, rtol=1e-9, atol=1e-12, err_msg=""):
    """Shape, then dtype (when both are arrays), then values."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{err_msg}: shape {actual.shape} != {expected.shape}"
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
