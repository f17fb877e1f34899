"""The benchmarked step paths on a tiny model: the original-style model computes the reference's step."""

import pytest
import torch

from cot_transplant.bench.steps import STEP_PATHS, registry, select


def test_original_style_gives_the_reference_gradients(harness_and_batch, grads_of):
    h, batch = harness_and_batch
    paths = {p.name: p for p in STEP_PATHS}
    ref = grads_of(paths["reference"], h, batch)
    orig = grads_of(paths["original-style"], h, batch)
    assert set(ref) == set(orig)
    assert all(g.abs().sum() > 0 for g in ref.values())
    assert any(".arguer." in n for n in ref) and any(".chooser." in n for n in ref)
    for name in ref:
        torch.testing.assert_close(orig[name], ref[name], rtol=1e-4, atol=1e-5)  # summation order only


def test_plain_lora_trains_both_adapters_and_not_the_base(harness_and_batch, grads_of):
    h, batch = harness_and_batch
    grads = grads_of({p.name: p for p in STEP_PATHS}["plain-lora"], h, batch)
    assert all("lora_" in n for n in grads)
    assert any(".arguer." in n and g.abs().sum() > 0 for n, g in grads.items())
    assert any(".chooser." in n and g.abs().sum() > 0 for n, g in grads.items())


def test_registry_refuses_duplicates_and_unknown_names():
    with pytest.raises(ValueError, match="twice"):
        registry(STEP_PATHS[0], STEP_PATHS[0])
    with pytest.raises(ValueError, match="known: original-style, reference, plain-lora, fast"):
        select(["no-such-path"])
    assert [p.name for p in select(["plain-lora", "reference"])] == ["reference", "plain-lora"]
