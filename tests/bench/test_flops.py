"""FLOP counts against hand-computed values, and against torch's own count on a tiny model."""

import pytest
import torch

from cot_transplant.bench.flops import (BatchShape, ModelDims, attention_flops, body_params, flops_backward,
                                        flops_forward, head_params, lora_params, matmul_flops)
from cot_transplant.bench.steps import STEP_PATHS

QKVO = ("q_proj", "k_proj", "v_proj", "o_proj")
# hidden 32, 4 heads of 8 (q width 32), 2 kv heads (k/v width 16), MLP 64, vocab 100, LoRA r=4.
TINY = ModelDims(layers=2, hidden=32, heads=4, kv_heads=2, head_dim=8, intermediate=64, vocab=100,
                 lora_r=4, lora_targets=QKVO)


def test_parameter_counts_by_hand():
    # per layer: q 32*32 + k 32*16 + v 32*16 + o 32*32 + gate/up/down 3 * 32*64 = 1024+512+512+1024+6144
    assert body_params(TINY) == 2 * 9216
    assert head_params(TINY) == 100 * 32
    # per layer: q 4*(32+32) + k 4*(32+16) + v 4*(32+16) + o 4*(32+32) = 256+192+192+256
    assert lora_params(TINY) == 2 * 896


def test_smollm2_parameter_counts():
    # SmolLM2-135M: 30 layers, hidden 576, 9 heads / 3 kv heads of 64, MLP 1536, vocab 49152 (tied).
    dims = ModelDims(30, 576, 9, 3, 64, 1536, 49152, lora_r=16, lora_targets=QKVO)
    assert body_params(dims) == 106_168_320
    assert head_params(dims) == 28_311_552
    # + embedding-tied head + 61 norm vectors of 576 = the checkpoint's 134,515,008 parameters
    assert body_params(dims) + head_params(dims) + 61 * 576 == 134_515_008
    assert lora_params(dims) == 30 * 16 * ((576 + 576) * 2 + (576 + 192) * 2)


def test_forward_and_backward_by_hand():
    assert attention_flops(10, TINY) == 4 * 2 * 4 * 8 * 10 ** 2 == 25_600
    linear = 2 * (18_432 + 1_792) * 10  # 404,480
    assert flops_forward(10, TINY, logits_positions=1) == linear + 2 * 3_200 * 1 + 25_600 == 436_480
    assert flops_forward(10, TINY, logits_positions=10) == linear + 2 * 3_200 * 10 + 25_600
    assert flops_forward(10, TINY, logits_positions=0) == linear + 25_600
    # input gradients (one forward, attention twice) + the adapter's weight gradients
    assert flops_backward(10, TINY, grad_logits_positions=1) == linear + 6_400 + 2 * 25_600 + 2 * 1_792 * 10 == 497_920
    assert matmul_flops(2048) == 17_179_869_184


def test_step_plans_differ_by_the_lm_head_only():
    shape = BatchShape(rows=2, arguer_len=10, chooser_len=20)
    paths = {p.name: p for p in STEP_PATHS}
    ref = paths["reference"].flops(shape, TINY, True)
    orig = paths["original-style"].flops(shape, TINY, True)
    plain = paths["plain-lora"].flops(shape, TINY, True)
    head = 2 * head_params(TINY)
    # arguer: 4 sequences x 10 positions of logits (reference: none); chooser: 2 x 20 (reference: 2 x 1)
    assert orig.forward - ref.forward == head * (4 * 10 + 2 * 20 - 2)
    assert orig.backward - ref.backward == head * (2 * 20 - 2)  # the arguer's logits get no gradient
    assert plain.forward - ref.forward == plain.backward - ref.backward == head * 4
    assert ref.forward == 4 * flops_forward(10, TINY, 0) + 2 * flops_forward(20, TINY, 1)
    assert paths["reference"].flops(shape, TINY, False).backward == 0


@pytest.fixture(scope="module")
def tiny_peft():
    from cot_transplant.config import LoraConfig
    from cot_transplant.models import build_tiny
    from cot_transplant.train.adapters import attach_adapters

    base = build_tiny("tiny-llama", 100)  # eager attention: its products are plain (b)mm that torch counts
    model = attach_adapters(base, LoraConfig(r=4, alpha=8, dropout=0.0), "joint", 0)
    assert ModelDims.from_config(base.config, 4, QKVO) == TINY
    assert sum(p.numel() for n, p in model.named_parameters() if ".arguer." in n) == lora_params(TINY)
    return model


@pytest.mark.parametrize("keep, positions", [(1, 1), (0, 10)])
def test_formula_matches_torch_flop_counter(tiny_peft, keep, positions):
    from torch.utils.flop_counter import FlopCounterMode

    ids = torch.randint(0, 100, (1, 10), generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as fwd:
        out = tiny_peft(input_ids=ids, use_cache=False, logits_to_keep=keep)
    assert fwd.get_total_flops() == flops_forward(10, TINY, positions)
    with FlopCounterMode(display=False) as bwd:
        out.logits[:, -1].sum().backward()
    # Autograd skips the input gradients of layer 0's q/k/v (base and LoRA A): nothing below needs them.
    skipped = 2 * 10 * (32 * 32 + 2 * 32 * 16 + 3 * 4 * 32)
    assert bwd.get_total_flops() == flops_backward(10, TINY, positions) - skipped
    tiny_peft.zero_grad(set_to_none=True)
