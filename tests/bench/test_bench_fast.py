"""The benchmark's `fast` path: the reference's gradients, and a FLOP plan that matches torch's count."""

import torch

from cot_transplant.bench.flops import ModelDims
from cot_transplant.bench.steps import STEP_PATHS, shape_of

PATHS = {p.name: p for p in STEP_PATHS}


def test_fast_gives_the_reference_gradients(harness_and_batch, grads_of):
    h, batch = harness_and_batch
    assert h.settings.fast_path == "off"  # so `reference` is the reference step
    ref, fast = grads_of(PATHS["reference"], h, batch), grads_of(PATHS["fast"], h, batch)
    assert set(ref) == set(fast) and any(".arguer." in n for n in ref)
    for name in ref:
        torch.testing.assert_close(fast[name], ref[name], rtol=1e-4, atol=1e-5 * ref[name].abs().max().item())


def test_fast_plan_does_less_and_matches_torch_forward_count(harness_and_batch):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    h, batch = harness_and_batch
    shape = shape_of(batch, h.settings)
    assert shape.packed_arguer_len < 2 * shape.arguer_len and shape.kept_chooser_len < shape.chooser_len
    dims = ModelDims.from_config(h.model.get_base_model().config, h.cfg.lora.r, h.cfg.lora.target_modules)
    assert PATHS["fast"].flops(shape, dims, True).total < PATHS["reference"].flops(shape, dims, True).total
    h.model.eval()
    # The math backend: its products are matmuls that torch counts (it does not count CPU flash attention).
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fwd:
        PATHS["fast"].evaluate(h.model, batch, h.settings)
    h.model.train()
    assert fwd.get_total_flops() == PATHS["fast"].flops(shape, dims, False).forward


def test_frozen_cached_path_serves_the_second_pass_from_the_cache(harness_and_batch):
    h, batch = harness_and_batch
    path = PATHS["frozen-cached"]
    settings, cache = path.setup(h.settings)
    assert settings.variant == "frozen-arguer" and cache is not None and cache is not path.setup(h.settings)[1]
    arguer_b = [p for n, p in h.model.named_parameters() if "lora_B" in n and ".arguer." in n]
    kept = [p.detach().clone() for p in arguer_b]  # the fixture is shared by the module: put them back after
    for p in arguer_b:
        p.data.zero_()  # a fresh frozen arguer (the fixture draws nonzero B)
    h.model.train()
    path.train(h.model, batch, settings, cache)
    path.train(h.model, batch, settings, cache)
    h.model.eval()
    with torch.no_grad():
        path.evaluate(h.model, batch, settings, cache)
    h.model.train()
    for p, value in zip(arguer_b, kept):
        p.data.copy_(value)
    stats = cache.stats
    assert (stats.misses, stats.hits, stats.stored_rows) == (1, 2, batch.chooser_ids.shape[0])
