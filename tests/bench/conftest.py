"""A tiny-model bench harness with nonzero adapters, shared by the step-path tests."""

import pytest
import torch

from cot_transplant.bench.rows import sample_examples
from cot_transplant.bench.runner import BenchOptions, bench_config, build_harness
from cot_transplant.data.synth import synthesize
from cot_transplant.train.batches import collate

TINY = ("prompt.template=chat", "lora.r=4", "lora.alpha=8", "lora.dropout=0.0")


@pytest.fixture(scope="module")
def harness_and_batch():
    h = build_harness(bench_config(BenchOptions(model="tiny-llama", overrides=TINY)))
    torch.manual_seed(0)
    for name, p in h.model.named_parameters():
        if "lora_B" in name:  # B starts at zero; make the adapters' paths carry gradient everywhere
            p.data.normal_(0, 0.1)
    examples, _ = sample_examples(synthesize(6, 0, short=True), 2, 0, h.cfg, h.template, h.tokenizer, h.limit)
    return h, collate(examples, h.tokenizer.pad_token_id)


@pytest.fixture
def grads_of():
    """grads_of(path, h, batch): the gradients one training step of `path` leaves, by parameter name."""

    def run(path, h, batch):
        h.model.zero_grad(set_to_none=True)
        path.train(h.model, batch, h.settings)
        return {n: p.grad.clone() for n, p in h.model.named_parameters() if p.grad is not None}

    return run
