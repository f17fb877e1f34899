"""Gradients through the transplant: reach both models, match finite differences, survive checkpointing."""

from __future__ import annotations

import pytest
import torch
from transplant_helpers import CallCounter, enable_checkpointing, ids, lora_grads, tiny, two_adapters, with_lora

from cot_transplant.transplant import (TransplantSpec, active_adapter, backward_from_states, backward_to_states,
                                       capture, capture_kv, inject)

SRC_SPANS = [[(2, 6)], [(1, 5)]]
TGT_SPANS = [[(3, 7), (8, 12)]]  # 2 one-span source rows feed 1 two-span target row


def _loss(logits: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits[:, -1], dim=-1)[:, 3].sum()


def _step(src, tgt, spec=TransplantSpec(), checkpointing=False):
    """Capture from src, inject into tgt, one backward inside the inject block; LoRA grads of both."""
    for model in (src, tgt):
        model.zero_grad(set_to_none=True)
        _train(model, checkpointing)
    with CallCounter(_k_proj(src)) as src_calls, CallCounter(_k_proj(tgt)) as tgt_calls:
        with capture(src, SRC_SPANS, spec) as cap:
            src(ids(2, 9, seed=1), use_cache=False)
        with inject(tgt, TGT_SPANS, cap.kv):
            _loss(tgt(ids(1, 14, seed=2), use_cache=False).logits).backward()
    assert src_calls.calls == tgt_calls.calls == (2 if checkpointing else 1)  # recomputed during backward
    return lora_grads(src), lora_grads(tgt)


def _train(model, checkpointing: bool) -> None:
    if checkpointing:
        enable_checkpointing(model)
    model.train()


def _k_proj(model):
    return model.get_base_model().model.layers[0].self_attn.k_proj


def test_loss_on_target_reaches_lora_of_both_models():
    src, tgt = with_lora(tiny(seed=1), seed=1), with_lora(tiny(seed=2), seed=2)
    src_grads, tgt_grads = _step(src, tgt)
    kv_lora = {n: g for n, g in src_grads.items() if "k_proj" in n or "v_proj" in n}
    assert len(kv_lora) == 8 and all(g.abs().max() > 0 for g in kv_lora.values())
    assert all(g.abs().max() > 0 for n, g in src_grads.items() if "layers.0." in n)
    assert all(g.abs().max() > 0 for g in tgt_grads.values())


def _float64_exact(monkeypatch):
    """Keep float64 end to end: transformers' RMSNorm and eager softmax compute in float32."""
    from transformers.models.llama import modeling_llama

    def rms_norm(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    monkeypatch.setattr(modeling_llama.LlamaRMSNorm, "forward", rms_norm)
    models = [tiny(seed=s, dtype=torch.float64) for s in (1, 2)]
    for model in models:
        model.set_attn_implementation("sdpa")
    return models


def test_gradients_match_finite_differences_float64(monkeypatch):
    src, tgt = _float64_exact(monkeypatch)
    src_ids, tgt_ids = ids(2, 9, seed=1), ids(1, 14, seed=2)

    def loss():
        with capture_kv(src, SRC_SPANS) as cap:
            src(src_ids)
        with inject(tgt, TGT_SPANS, cap.kv):
            return _loss(tgt(tgt_ids).logits)

    loss().backward()
    span_token = int(src_ids[0, 3])  # an embedding row the source reads inside a span
    checks = [(src.model.layers[0].self_attn.k_proj.weight, [(0, 0), (3, 5), (15, 31)]),
              (src.model.layers[1].self_attn.v_proj.weight, [(0, 0), (3, 5), (15, 31)]),
              (src.model.embed_tokens.weight, [(span_token, 0), (span_token, 7)]),
              (tgt.model.layers[1].self_attn.q_proj.weight, [(0, 0), (31, 2)])]
    eps = 1e-4
    for param, indices in checks:
        assert param.grad.abs().max() > 0
        for idx in indices:
            with torch.no_grad():
                param[idx] += eps
                plus = loss()
                param[idx] -= 2 * eps
                minus = loss()
                param[idx] += eps
            numeric = (plus - minus) / (2 * eps)
            torch.testing.assert_close(param.grad[idx], numeric, rtol=1e-5, atol=1e-10)


@pytest.mark.parametrize("family", ["tiny-llama", "tiny-qwen2"])
@pytest.mark.parametrize("spec", [TransplantSpec(), TransplantSpec("residual", (0,))], ids=["kv", "residual"])
def test_checkpointing_gives_the_same_gradients_two_models(family, spec):
    def models():
        return with_lora(tiny(family, seed=1), seed=1), with_lora(tiny(family, seed=2), seed=2)

    plain = _step(*models(), spec=spec)
    checkpointed = _step(*models(), spec=spec, checkpointing=True)
    for want, got in zip(plain, checkpointed):
        assert want.keys() == got.keys()
        for name in want:
            torch.testing.assert_close(got[name], want[name], atol=1e-7, rtol=0)


def _two_adapter_step(model, checkpointing: bool, two_phase: bool):
    model.zero_grad(set_to_none=True)
    _train(model, checkpointing)
    chooser = [p for n, p in model.named_parameters() if ".chooser." in n]
    with CallCounter(_k_proj(model)) as calls:
        with active_adapter(model, "arguer"), capture_kv(model, SRC_SPANS) as cap:
            model(ids(2, 9, seed=1), use_cache=False)
        with active_adapter(model, "chooser"), inject(model, TGT_SPANS, cap.kv):
            loss = _loss(model(ids(1, 14, seed=2), use_cache=False).logits)
            if not two_phase:
                loss.backward()
                return lora_grads(model)
            state_grads = backward_to_states(loss, cap.kv, chooser)
        with active_adapter(model, "arguer"):
            backward_from_states(cap.kv, state_grads)
    assert calls.calls == (4 if checkpointing else 2)  # arguer and chooser passes, each recomputed
    return lora_grads(model)


@pytest.mark.parametrize("family", ["tiny-llama", "tiny-qwen2"])
def test_two_adapters_one_base_two_phase_backward_is_exact_under_checkpointing(family):
    reference = _two_adapter_step(two_adapters(family), checkpointing=False, two_phase=False)
    assert all(g.abs().max() > 0 for n, g in reference.items() if ".arguer." in n and "layers.0." in n)
    for checkpointing in (False, True):
        got = _two_adapter_step(two_adapters(family), checkpointing, two_phase=True)
        for name in reference:
            torch.testing.assert_close(got[name], reference[name], atol=1e-7, rtol=0)


def test_active_adapter_keeps_requires_grad_and_restores_the_active_adapter():
    model = two_adapters()
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    with active_adapter(model, "chooser"):
        assert model.active_adapter == "chooser"
        assert {n: p.requires_grad for n, p in model.named_parameters()} == before
    assert model.active_adapter == "arguer"
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before


def test_active_adapter_of_the_active_one_changes_nothing(monkeypatch):
    model = two_adapters()
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    monkeypatch.setattr(model, "set_adapter", lambda name: pytest.fail("switched to the adapter already active"))
    with active_adapter(model, "arguer"):
        assert model.active_adapter == "arguer"
    assert model.active_adapter == "arguer"
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before


def test_capture_under_checkpointing_ignores_recomputation():
    def run(checkpointing):
        model = with_lora(tiny(seed=1), seed=1)
        _train(model, checkpointing)
        with capture_kv(model, SRC_SPANS) as cap:
            out = model(ids(2, 9, seed=1), use_cache=False).logits
            kv = cap.kv
            loss = out[:, -1].logsumexp(-1).sum() + sum(t.pow(2).sum() for t in kv.tensors.values())
            loss.backward()  # recomputes the checkpointed layers while the capture hooks are still registered
        assert cap.kv is kv and len(kv) == 2 and all(t.shape == (8, 16) for t in kv.tensors.values())
        return lora_grads(model)

    plain, checkpointed = run(False), run(True)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-7, rtol=0)


def test_states_read_under_no_grad_still_carry_gradients_and_detach_cuts_them():
    src, tgt = tiny(seed=1), tiny(seed=2)
    with capture_kv(src, SRC_SPANS) as cap:
        src(ids(2, 9, seed=1))
        with torch.no_grad():
            kv = cap.kv
    assert all(t.requires_grad for t in kv.tensors.values())
    detached = kv.detach()
    assert len(detached) == 2 and not any(t.requires_grad for t in detached.tensors.values())
    with inject(tgt, TGT_SPANS, detached):
        _loss(tgt(ids(1, 14, seed=2)).logits).backward()
    assert all(p.grad is None for p in src.parameters()) and tgt.model.embed_tokens.weight.grad is not None
