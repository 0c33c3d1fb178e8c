import numpy as np
import pytest
from hypothesis import settings

# a bounded, deterministic profile: property tests must fit the CI budget
settings.register_profile("rnnkit", max_examples=25, deadline=None, derandomize=True)
settings.load_profile("rnnkit")


@pytest.fixture
def rng():
    return np.random.default_rng(0)
