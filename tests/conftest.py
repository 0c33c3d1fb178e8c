import numpy as np
import pytest
from hypothesis import settings

from helpers import require

# a bounded, deterministic profile: property tests must fit the CI budget
settings.register_profile("rnnkit", max_examples=25, deadline=None, derandomize=True)
settings.load_profile("rnnkit")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# Optional packages, one fixture each: a test that needs one names it, and skips when it is
# missing (fails under CI: see helpers.require); the rest of its file runs regardless.
# Session-scoped, so hypothesis tests can take them too.


@pytest.fixture(scope="session")
def torch():
    """torch 2.13.0, the reference."""
    return require("torch")


@pytest.fixture(scope="session")
def onnx():
    return require("onnx")


@pytest.fixture(scope="session")
def ort():
    """onnxruntime."""
    return require("onnxruntime")
