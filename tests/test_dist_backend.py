"""docs/scaling.rst: under torchrun the library creates an nccl process group when CUDA is
available and gloo otherwise -- for the zoo build and for meta-training alike."""

import pytest
import torch
import torch.distributed as dist

from wskan_ext.tasks.train import dist_info
from wskan_ext.zoo.build import _dist


@pytest.fixture
def fake_group(monkeypatch):
    """Record the backend asked for instead of creating a process group."""
    calls = {"backend": [], "device": []}
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: calls["backend"].append(backend))
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls["device"].append(d))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    return calls


@pytest.mark.parametrize("cuda, backend", [(True, "nccl"), (False, "gloo")])
def test_zoo_build_and_training_pick_the_same_backend(fake_group, monkeypatch, cuda, backend):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    _dist()
    dist_info()
    assert fake_group["backend"] == [backend, backend]
    assert fake_group["device"] == ([3] if cuda else [])  # the build binds its rank's GPU


def test_single_process_creates_no_group(fake_group, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert _dist() == (None, 0, 1, False)
    assert fake_group["backend"] == []
