"""Suite-wide settings: one torch thread (tiny models on 2 shared cores run far faster with one), and the
skip of the `gpu` smoke tests where their device (CUDA unless COT_TRANSPLANT_SMOKE_DEVICE=cpu) is absent."""

import importlib.util
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _smoke():
    """tests/gpu/smoke.py, loaded by path (tests/gpu is not on sys.path for every selection)."""
    spec = importlib.util.spec_from_file_location("_gpu_smoke_for_conftest", Path(__file__).parent / "gpu" / "smoke.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pytest_collection_modifyitems(config, items):
    """Skip every `gpu`-marked test with one line when the smoke device is missing (no CUDA by default)."""
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    reason = _smoke().skip_reason() if gpu else None
    if reason:
        for item in gpu:
            item.add_marker(pytest.mark.skip(reason=reason))
