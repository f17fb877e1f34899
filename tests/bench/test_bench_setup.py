"""The bench measures the model `train` would set up: two bases, gradient checkpointing, the residual dtype."""

import dataclasses

import pytest
import torch

from cot_transplant.bench.rows import sample_examples
from cot_transplant.bench.runner import BenchOptions, bench_config, build_harness, run_bench
from cot_transplant.bench.steps import STEP_PATHS
from cot_transplant.data.synth import synthesize
from cot_transplant.errors import UserError
from cot_transplant.models import build_tiny, load_tokenizer
from cot_transplant.train.adapters import ModelPair
from cot_transplant.train.batches import collate
from cot_transplant.train.setup import setup_model

TINY = ("prompt.template=chat", "lora.r=4", "lora.alpha=8", "lora.dropout=0.0", "train.batch_size=1")
WIDE = ("model.gradient_checkpointing=true", "model.residual_dtype=float64")


@pytest.fixture(scope="module")
def two_bases(tmp_path_factory):
    """arguer.model / chooser.model overrides naming two saved tiny Llamas of one shape."""
    vocab = len(load_tokenizer("smollm2"))
    root = tmp_path_factory.mktemp("models")
    for name, seed in (("a", 1), ("b", 2)):
        build_tiny("tiny-llama", vocab, seed=seed).save_pretrained(root / name)
    return (f"arguer.model={root / 'a'}", f"chooser.model={root / 'b'}")


def test_harness_is_the_training_model_setup():
    cfg = bench_config(BenchOptions(model="tiny-llama", overrides=TINY + WIDE))
    h, m = build_harness(cfg), setup_model(cfg)
    base = m.model.get_base_model()
    assert base.is_gradient_checkpointing and sum(len(layer._forward_pre_hooks) for layer in base.model.layers)
    harness_base = h.model.get_base_model()
    assert harness_base.is_gradient_checkpointing
    assert [len(layer._forward_pre_hooks) for layer in harness_base.model.layers] == \
        [len(layer._forward_pre_hooks) for layer in base.model.layers]
    assert h.settings == dataclasses.replace(m.settings, fast_path="off")  # each path picks its own step
    want = m.model.state_dict()
    got = h.model.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)


def test_gradient_checkpointing_leaves_out_only_the_original_style_path():
    opts = BenchOptions(model="tiny-llama", rows=1, repeats=1, warmup=0, overrides=TINY + WIDE, matmul_n=32)
    logged = []
    result = run_bench(opts, sources={"tiny": synthesize(8, 0, short=True)}, log=logged.append)
    assert result["paths"] == [p.name for p in STEP_PATHS if p.name != "original-style"]
    assert any("original-style is not exact" in line for line in logged)
    with pytest.raises(UserError, match="original-style is not exact"):
        run_bench(dataclasses.replace(opts, paths=("original-style", "reference")),
                  sources={"tiny": synthesize(8, 0, short=True)}, log=logged.append)


def test_two_bases_are_benchmarked_and_original_style_still_gives_the_reference_gradients(two_bases):
    h = build_harness(bench_config(BenchOptions(model="tiny-llama", overrides=TINY + two_bases)))
    assert isinstance(h.model, ModelPair)
    torch.manual_seed(0)
    for name, p in h.model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.1)
    examples, _ = sample_examples(synthesize(6, 0, short=True), 2, 0, h.cfg, h.template, h.tokenizer, h.limit)
    batch = collate(examples, h.tokenizer.pad_token_id)
    grads = {}
    for path in STEP_PATHS:
        h.model.zero_grad(set_to_none=True)
        path.train(h.model, batch, h.settings)
        grads[path.name] = {n: p.grad.clone() for n, p in h.model.named_parameters() if p.grad is not None}
    ref = grads["reference"]
    assert any(n.startswith("arguer_model.") for n in ref) and any(n.startswith("chooser_model.") for n in ref)
    for name in ("original-style", "fast"):
        assert set(grads[name]) == set(ref), name
        for n in ref:
            torch.testing.assert_close(grads[name][n], ref[n], rtol=1e-4, atol=1e-5)
    plain = grads["plain-lora"]
    assert all("lora_" in n for n in plain)
    assert any(n.startswith("arguer_model.") and g.abs().sum() > 0 for n, g in plain.items())
    assert any(n.startswith("chooser_model.") and g.abs().sum() > 0 for n, g in plain.items())
