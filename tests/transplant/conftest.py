"""Seed, thread count and warning filters for every transplant test; helpers live in transplant_helpers.py."""

import warnings

import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded_single_threaded_quiet():
    # Tiny models on shared cores: one thread is ~80x faster than two contended ones (measured 3 ms vs 280 ms).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")  # raised inside peft
        yield
    torch.set_num_threads(threads)
