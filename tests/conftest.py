"""Suite-wide settings: one torch thread (tiny models on 2 shared cores run far faster with one)."""

import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
