"""The exact fast path: the reference step's loss and gradients without its wasted work.

The reference step (`steps/reference.py`) computes things no output reads:
- the arguer runs the shared prefix (template + question) once per candidate, and the
  tokens after each argument span (no span token reads them);
- the chooser runs every layer at the candidate positions, although their keys and values
  are overwritten in every layer, so no other position reads their hidden states.

Here (by idea: `plan.py` the index plans, `attention.py` the attention functions, `layers.py` the
layer-by-layer passes, `dropout.py` LoRA dropout, `state_cache.py` the arguer states reused across
passes, `step.py` the passes and the step):
- arguer: one packed row per example, [prefix | candidate 1 | candidate 2], the candidates
  at their own positions, with a 4D mask in which each candidate sees the prefix and
  itself, never the other candidate. Gradients reach the shared prefix from both.
- chooser: only the non-candidate tokens run, at their original position ids. In every
  layer the arguer's K/V (k_proj/v_proj outputs, before RoPE) enter the attention as extra
  keys/values, rotated at the candidate positions, under the full sequence's causal pattern
  (an attention function in transformers' `AttentionInterface`, registered by `attention.register_attention`).
- attention in both passes block by block: each block of `train.fast_path_block` queries over only the key ranges
  it sees (`chunked_attention`; one masked call computed every pair of the pattern);
- logits at the last position only, and the two-phase backward every step shares
  (`steps/backward.py`), so it stays exact with gradient checkpointing.

It applies when every layer's K and V are transplanted (`transplant.site: kv`, all layers;
any `transplant.fraction`), to the families whose architecture-table entry says `fast_path`
(Llama, Mistral, Qwen2) with eager or sdpa attention (`blocker`), for the variants
`steps/choice.py` allows. Elsewhere the reference runs, and `choice.py` says why; a batch longer
than a model's sliding window takes the reference (`choice.path_for`).
With LoRA dropout > 0 the shared prefix draws one dropout mask for both candidates (the
reference draws two), and masks come from one 32-bit draw per element (`UniformDropout`,
numpy's SFC64 seeded from torch's generator) instead of `bernoulli_`: the same distribution,
not the same random numbers.
"""

from cot_transplant.train.steps.fast.attention import chunked_attention, register_attention
from cot_transplant.train.steps.fast.dropout import UniformDropout, keep_mask, threshold, uniform_lora_dropout
from cot_transplant.train.steps.fast.plan import attention_chunks, fast_shapes, pack_arguer, plan_chooser
from cot_transplant.train.steps.fast.state_cache import CacheStats, StateCache
from cot_transplant.train.steps.fast.step import blocker, forward, sliding_window, train_forward_backward

__all__ = ["CacheStats", "StateCache", "UniformDropout", "attention_chunks", "blocker", "chunked_attention",
           "fast_shapes", "forward", "keep_mask", "pack_arguer", "plan_chooser", "register_attention",
           "sliding_window", "threshold", "train_forward_backward", "uniform_lora_dropout"]
