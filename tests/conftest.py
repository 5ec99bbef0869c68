"""Shared test configuration: Hypothesis profiles and device parametrisation.

Profiles (select with ``HYPOTHESIS_PROFILE=...``, default ``ci``):

* ``ci`` -- deterministic (derandomized), bounded number of examples, no deadline;
* ``thorough`` -- random, many more examples, for local runs.
"""

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=int(os.environ.get("WSKAN_CI_EXAMPLES", "15")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile(
    "thorough",
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

torch.set_num_threads(int(os.environ.get("WSKAN_TEST_THREADS", "2")))

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    """Parametrise a test over ``cpu`` and ``cuda`` (skipped without a GPU)."""
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA not available")
    return torch.device(request.param)
