"""A hand-written LLaMA forward from a tiny model's weights, with states substituted at chosen positions.

Independent of transformers' modules and of the hooks: golden values for the transplant.
Unpadded batches only; positions are 0..T-1.
"""

from __future__ import annotations

import torch

# (site key, layer) -> list of (row, position, value (D,)) to write over that site's output
Substitutions = dict[tuple[str, int], list[tuple[int, int, torch.Tensor]]]


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate (B, H, T, hd) by position, rotate-half convention."""
    hd, t = x.shape[-1], x.shape[-2]
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    freqs = torch.outer(torch.arange(t, dtype=torch.float64), inv_freq)  # (T, hd/2)
    emb = torch.cat([freqs, freqs], dim=-1)
    cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
    rotated = torch.cat([-x[..., hd // 2:], x[..., :hd // 2]], dim=-1)
    return x * cos + rotated * sin


def _substitute(x: torch.Tensor, key: tuple[str, int], subs: Substitutions) -> torch.Tensor:
    x = x.clone()
    for row, pos, value in subs.get(key, []):
        x[row, pos] = value
    return x


def llama_forward(model, ids: torch.Tensor, subs: Substitutions | None = None):
    """Logits (B, T, V) and every layer's k/v/residual outputs {(key, layer): (B, T, D)}."""
    subs = subs or {}
    cfg = model.config
    w = {n.removeprefix("model."): p.detach() for n, p in model.named_parameters()}
    nh, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = cfg.hidden_size // nh
    theta = cfg.rope_parameters["rope_theta"]
    b, t = ids.shape
    causal = torch.full((t, t), float("-inf"), dtype=w["embed_tokens.weight"].dtype).triu(1)
    x = w["embed_tokens.weight"][ids]  # (B, T, C)
    states = {}
    for i in range(cfg.num_hidden_layers):
        p = f"layers.{i}."
        h = _rms(x, w[p + "input_layernorm.weight"], cfg.rms_norm_eps)
        q = h @ w[p + "self_attn.q_proj.weight"].T  # (B, T, nh*hd)
        k = _substitute(h @ w[p + "self_attn.k_proj.weight"].T, ("k", i), subs)  # (B, T, nkv*hd)
        v = _substitute(h @ w[p + "self_attn.v_proj.weight"].T, ("v", i), subs)
        states[("k", i)], states[("v", i)] = k, v
        q = _rope(q.view(b, t, nh, hd).transpose(1, 2), theta)  # (B, nh, T, hd)
        k = _rope(k.view(b, t, nkv, hd).transpose(1, 2), theta).repeat_interleave(nh // nkv, dim=1)
        v = v.view(b, t, nkv, hd).transpose(1, 2).repeat_interleave(nh // nkv, dim=1)
        att = torch.softmax(q @ k.transpose(-1, -2) / hd ** 0.5 + causal, dim=-1)  # (B, nh, T, T)
        out = (att @ v).transpose(1, 2).reshape(b, t, nh * hd)
        x = x + out @ w[p + "self_attn.o_proj.weight"].T
        h = _rms(x, w[p + "post_attention_layernorm.weight"], cfg.rms_norm_eps)
        gate = torch.nn.functional.silu(h @ w[p + "mlp.gate_proj.weight"].T)
        x = x + (gate * (h @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
        x = _substitute(x, ("residual", i), subs)
        states[("residual", i)] = x
    x = _rms(x, w["norm.weight"], cfg.rms_norm_eps)
    return x @ w["embed_tokens.weight"].T, states


def transplant_subs(src_states, src_spans, tgt_spans, keys) -> Substitutions:
    """Substitutions moving `keys` of the source's row-major span entries onto the target's, one for one."""
    src = [(r, s, e) for r, row in enumerate(src_spans) for s, e in row]
    tgt = [(r, s, e) for r, row in enumerate(tgt_spans) for s, e in row]
    subs: Substitutions = {}
    for key in keys:
        subs[key] = [(tr, ts + j, src_states[key][sr, ss + j])
                     for (sr, ss, se), (tr, ts, _) in zip(src, tgt) for j in range(se - ss)]
    return subs
