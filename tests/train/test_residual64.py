"""model.residual_dtype=float64 on tiny decoders: dtypes inside, effect on the logits, LoRA training."""

import pytest
import torch

from cot_transplant.config import load_config
from cot_transplant.errors import UserError
from cot_transplant.models import build_tiny
from cot_transplant.train.adapters import adapter_params
from cot_transplant.train.batches import collate
from cot_transplant.train.setup import setup
from cot_transplant.train.steps.reference import train_forward_backward
from cot_transplant.transplant.residual64 import ResidualDtype
from train_helpers import tiny_cfg

VOCAB = 500


def record_dtypes(model):
    """Forward hooks recording the dtype of layer 0's output, its q_proj input and the final norm's input."""
    seen, body = {}, model.model

    def record(key, of_output):
        def hook(module, args, output):
            seen.setdefault(key, (output if of_output else args[0]).dtype)
        return hook

    handles = [body.layers[0].register_forward_hook(record("layer_out", True)),
               body.layers[0].self_attn.q_proj.register_forward_hook(record("q_in", False)),
               body.norm.register_forward_hook(record("norm_in", False))]
    return seen, handles


@pytest.mark.parametrize("family", ["tiny-llama", "tiny-qwen2", "tiny-mistral"])
def test_float64_residual_changes_fp32_logits_only_by_rounding(family):
    """fp32 compute: the float64 residual moves the logits by about 1e-7 here (nonzero: the adds round
    differently), far below 1e-4; removing the hooks restores the plain model exactly."""
    model = build_tiny(family, VOCAB, seed=0)
    ids = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = model(ids).logits
        seen, handles = record_dtypes(model)
        with ResidualDtype(model):
            wide = model(ids).logits
        for h in handles:
            h.remove()
        again = model(ids).logits
    assert seen == {"layer_out": torch.float64, "q_in": torch.float32, "norm_in": torch.float32}
    assert wide.dtype == torch.float32
    diff = (wide - plain).abs().max().item()
    assert 0 < diff < 1e-4, diff
    assert torch.equal(again, plain)


def test_bf16_compute_keeps_the_residual_in_float64():
    model = build_tiny("tiny-llama", VOCAB, seed=0).to(torch.bfloat16)
    seen, _ = record_dtypes(model)
    with torch.no_grad(), ResidualDtype(model):
        logits = model(torch.randint(0, VOCAB, (1, 12))).logits
    assert seen == {"layer_out": torch.float64, "q_in": torch.bfloat16, "norm_in": torch.bfloat16}
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()


def test_other_families_are_refused_by_name():
    from transformers import AutoModelForCausalLM, Qwen3Config

    model = AutoModelForCausalLM.from_config(Qwen3Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                                         num_hidden_layers=1, num_attention_heads=4,
                                                         num_key_value_heads=2, head_dim=8))
    with pytest.raises(ValueError, match="llama, mistral, qwen2; this model is 'qwen3'"):
        ResidualDtype(model)


def test_config_accepts_only_float64():
    assert load_config(None, ["model.residual_dtype=float64"]).model.residual_dtype == "float64"
    assert load_config(None, []).model.residual_dtype is None
    with pytest.raises(UserError, match="model.residual_dtype"):
        load_config(None, ["model.residual_dtype=float32"])


def residual_hooks(session) -> int:
    """Forward pre-hooks on the session's decoder layers (`ResidualDtype` puts one on each)."""
    return sum(len(layer._forward_pre_hooks) for layer in session.model.get_base_model().model.layers)


def test_lora_training_step_with_a_float64_residual(tiny_rows):
    """Both adapters get gradients within 1e-4 of the plain fp32 step's (also with gradient checkpointing),
    and an optimizer step moves them."""
    plain = setup(tiny_cfg())
    wide = setup(tiny_cfg("model.residual_dtype=float64"))
    wide_ckpt = setup(tiny_cfg("model.residual_dtype=float64", "model.gradient_checkpointing=true"))
    assert residual_hooks(wide) and not residual_hooks(plain)
    wide.model.load_state_dict(plain.model.state_dict())
    wide_ckpt.model.load_state_dict(plain.model.state_dict())
    batch = collate(plain.examples["train"][:2], plain.tokenizer.pad_token_id)
    for s in (plain, wide, wide_ckpt):
        torch.manual_seed(1)
        for n, p in adapter_params(s.model, "arguer"):
            if "lora_B" in n:
                p.data.normal_(0, 0.05)
    found = []
    for s in (plain, wide, wide_ckpt):
        s.model.zero_grad(set_to_none=True)
        loss, _, _ = train_forward_backward(s.model, batch, s.settings, scale=1.0)
        assert torch.isfinite(loss).all()
        found.append({n: p.grad.clone() for n, p in s.model.named_parameters() if p.grad is not None})
    assert found[0].keys() == found[1].keys() == found[2].keys() and any(".arguer." in k for k in found[0])
    for k in found[0]:
        torch.testing.assert_close(found[1][k], found[0][k], rtol=1e-4, atol=1e-6, msg=k)
        torch.testing.assert_close(found[2][k], found[1][k], rtol=1e-5, atol=1e-7, msg=k)
    before = {n: p.detach().clone() for n, p in wide.model.named_parameters()}
    torch.optim.SGD([p for p in wide.model.parameters() if p.grad is not None], lr=0.1).step()
    moved = {n.split(".")[-2] for n, p in wide.model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert moved == {"arguer", "chooser"}
