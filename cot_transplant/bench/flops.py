"""FLOP counts of the benchmarked steps: pure functions of the model's shape and the batch's padded shape.

The count is nominal: the matrix multiplications a step asks for, on padded tensors
(what the kernels execute), 2 FLOPs per multiply-add. Per sequence of T tokens:

    forward  = 2 * (P_body + P_lora) * T  +  2 * P_head * logits_positions  +  A(T)
    backward = 2 * (P_body + P_lora) * T  +  2 * P_head * grad_logits_positions  +  2 * A(T)
               + 2 * P_lora * T
    A(T)     = 4 * layers * heads * head_dim * T^2

P_body: the decoder layers' weight matrices (q, k, v, o, gate, up, down), without
embeddings and norm vectors; P_head: the LM head (vocab x hidden), counted only at the
positions where logits are computed; P_lora: one adapter (the active one) on its target
modules, r * (in + out) each. A(T): QK^T and PV over the full T x T square, all query
heads; no causal halving, since attention with a padding mask computes the whole square.

Backward with a frozen base is not the usual 3x rule: the base weights get no gradient,
so each linear layer costs one forward for its input gradient; the adapters add their
weight gradients (2 * P_lora per token); the attention products have two activation
operands, so their backward is twice their forward. Not counted: element-wise work
(norms, RoPE, softmax, activations, the loss). Counted although autograd may skip it:
input gradients below the lowest adapter and, in the reference's arguer pass, the last
layer's work after its k/v projections (at most ~1/layers of a pass; the fast path skips it,
and its plan counts what it runs).
"""

from __future__ import annotations

from dataclasses import dataclass

PROJ_SHAPES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ModelDims:
    """The shape numbers a FLOP count needs (a llama-style decoder with a gated MLP)."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    lora_r: int = 0
    lora_targets: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config, lora_r: int = 0, lora_targets=()) -> "ModelDims":
        """From a transformers config (`num_hidden_layers`, `hidden_size`, ...) and the LoRA settings."""
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return cls(layers=config.num_hidden_layers, hidden=config.hidden_size, heads=heads,
                   kv_heads=getattr(config, "num_key_value_heads", None) or heads, head_dim=head_dim,
                   intermediate=config.intermediate_size, vocab=config.vocab_size,
                   lora_r=lora_r, lora_targets=tuple(lora_targets))

    def proj_shape(self, name: str) -> tuple[int, int]:
        """(in, out) features of one projection of a layer."""
        q, kv, d, i = self.heads * self.head_dim, self.kv_heads * self.head_dim, self.hidden, self.intermediate
        shapes = {"q_proj": (d, q), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (q, d),
                  "gate_proj": (d, i), "up_proj": (d, i), "down_proj": (i, d)}
        if name not in shapes:
            raise ValueError(f"flops: unknown projection '{name}' (known: {', '.join(PROJ_SHAPES)})")
        return shapes[name]


def body_params(dims: ModelDims) -> int:
    """Weight-matrix parameters of all decoder layers (no embeddings, LM head or norm vectors)."""
    return dims.layers * sum(i * o for i, o in map(dims.proj_shape, PROJ_SHAPES))


def head_params(dims: ModelDims) -> int:
    """LM-head parameters (vocab x hidden), tied to the embedding or not."""
    return dims.vocab * dims.hidden


def lora_params(dims: ModelDims) -> int:
    """Parameters of one LoRA adapter: r * (in + out) per target module per layer."""
    return dims.layers * sum(dims.lora_r * (i + o) for i, o in map(dims.proj_shape, dims.lora_targets))


def projection_params(dims: ModelDims, names) -> tuple[int, int]:
    """(weights, one adapter's LoRA parameters) of the projections `names` in one layer."""
    weights = sum(i * o for i, o in map(dims.proj_shape, names))
    lora = sum(dims.lora_r * (i + o) for n, (i, o) in zip(names, map(dims.proj_shape, names))
               if n in dims.lora_targets)
    return weights, lora


def attention_flops(n_tokens_per_seq: int, dims: ModelDims) -> int:
    """QK^T and PV of one forward over one sequence: 4 * layers * heads * head_dim * T^2."""
    return 4 * dims.layers * dims.heads * dims.head_dim * n_tokens_per_seq ** 2


def flops_forward(n_tokens_per_seq: int, dims: ModelDims, logits_positions: int) -> int:
    """One sequence's forward with one adapter active, logits at `logits_positions` positions."""
    t = n_tokens_per_seq
    return (2 * (body_params(dims) + lora_params(dims)) * t + 2 * head_params(dims) * logits_positions
            + attention_flops(t, dims))


def flops_backward(n_tokens_per_seq: int, dims: ModelDims, grad_logits_positions: int) -> int:
    """One sequence's backward (frozen base, trainable adapter); the LM head's input gradient at
    `grad_logits_positions` positions (every position whose logits were computed and sliced from)."""
    t = n_tokens_per_seq
    input_grads = (2 * (body_params(dims) + lora_params(dims)) * t + 2 * head_params(dims) * grad_logits_positions
                   + 2 * attention_flops(t, dims))
    return input_grads + 2 * lora_params(dims) * t


@dataclass(frozen=True)
class BatchShape:
    """Padded shape of one batch: `rows` chooser sequences of `chooser_len`, 2 * rows arguer ones of `arguer_len`."""

    rows: int
    arguer_len: int
    chooser_len: int
    # The fast path's shapes (train/steps/fast/plan.py): packed arguer rows (one per example), kept chooser
    # tokens, and the transplanted tokens they attend to as extra keys.
    packed_arguer_len: int = 0
    kept_chooser_len: int = 0
    extra_keys: int = 0
    # Query-key pairs its attention computes, summed over rows (blockwise attention skips the pairs its
    # pattern rules out); 0: the full squares, as for the other paths.
    arguer_pairs: int = 0
    chooser_pairs: int = 0


@dataclass(frozen=True)
class StepFlops:
    forward: int
    backward: int

    @property
    def total(self) -> int:
        return self.forward + self.backward

    def __add__(self, other: "StepFlops") -> "StepFlops":
        return StepFlops(self.forward + other.forward, self.backward + other.backward)


def passes_flops(shape: BatchShape, dims: ModelDims, *, arguer_logits: int, chooser_logits: int,
                 arguer_grad_logits: int, chooser_grad_logits: int, backward: bool = True) -> StepFlops:
    """Both passes of one batch: logits (and their gradients) at the given positions per sequence."""
    a, c = 2 * shape.rows, shape.rows
    fwd = a * flops_forward(shape.arguer_len, dims, arguer_logits) + c * flops_forward(shape.chooser_len, dims,
                                                                                       chooser_logits)
    if not backward:
        return StepFlops(fwd, 0)
    bwd = (a * flops_backward(shape.arguer_len, dims, arguer_grad_logits)
           + c * flops_backward(shape.chooser_len, dims, chooser_grad_logits))
    return StepFlops(fwd, bwd)


def matmul_flops(n: int) -> int:
    """One n x n by n x n matrix product."""
    return 2 * n ** 3


FORMULA = ("forward  = 2*(P_body+P_lora)*T + 2*P_head*logits_positions + A(T)\n"
           "backward = 2*(P_body+P_lora)*T + 2*P_head*grad_logits_positions + 2*A(T) + 2*P_lora*T\n"
           "A(T) = 4*layers*heads*head_dim*T^2 (full square, no causal halving); per sequence of T padded tokens; "
           "frozen base: input gradients plus the adapter's weight gradients; element-wise ops not counted")
