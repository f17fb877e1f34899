"""Tiny models, peft wrappers and tokenizers built in code for the transplant tests."""

from __future__ import annotations

import warnings

import torch

from cot_transplant.models import build_tiny

VOCAB = 64
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def tiny(family: str = "tiny-llama", seed: int = 0, dtype=torch.float32, vocab_size: int = VOCAB, **overrides):
    """A tiny decoder (hidden 32, 2 layers, 4 heads, 2 kv heads) in eval mode."""
    return build_tiny(family, vocab_size, seed=seed, **overrides).to(dtype).eval()


def lora_config():
    from peft import LoraConfig

    # init_lora_weights=False: B is random, so LoRA A gets non-zero gradients at step 0; dropout 0 for exactness.
    return LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS, lora_dropout=0.0, init_lora_weights=False)


def with_lora(model, name: str = "default", seed: int = 0):
    """`model` wrapped by peft with one LoRA adapter on q/k/v/o (random B)."""
    from peft import get_peft_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(model, lora_config(), adapter_name=name)


def two_adapters(family: str = "tiny-llama", seed: int = 0):
    """One base with adapters `arguer` and `chooser`, both trainable."""
    model = with_lora(tiny(family, seed), "arguer", seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        model.add_adapter("chooser", lora_config())
    model.set_requires_grad(["arguer", "chooser"], True)
    return model


def enable_checkpointing(model) -> None:
    """Non-reentrant checkpointing of every decoder layer, in train mode (dropout is 0 everywhere here)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # the name since transformers 5.2x; the old one warns
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.train()


class CallCounter:
    """Counts calls of one module while the `with` block lasts (to prove recomputation happened)."""

    def __init__(self, module):
        self.module, self.calls = module, 0

    def __enter__(self):
        self._handle = self.module.register_forward_hook(self._count)
        return self

    def _count(self, *_):
        self.calls += 1

    def __exit__(self, *exc):
        self._handle.remove()


def lora_grads(model) -> dict[str, torch.Tensor]:
    """Gradients of every LoRA parameter (zeros where None)."""
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
            for n, p in model.named_parameters() if "lora_" in n}


def ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """(batch, length) random token ids, never the pad id 0."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, VOCAB, (batch, length), generator=g)


def bpe_tokenizer():
    """A byte-level BPE tokenizer (GPT-2/SmolLM style) with chat special tokens, trained in code."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = ["The quick brown fox jumps over the lazy dog.", "Tom has 12 apples and gives 5 away, so 7 are left.",
              "Question: how many apples? Answer: 7", "candidate_1 candidate_2 argument answer"]
    tok.train_from_iterator(corpus * 10, trainer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>")


def metaspace_tokenizer():
    """A SentencePiece-style (Metaspace, prefix '▁') unigram tokenizer, trained in code."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=120, special_tokens=["<pad>", "<unk>"], unk_token="<unk>")
    tok.train_from_iterator(["The quick brown fox jumps over the lazy dog. Tom has 12 apples."] * 20, trainer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>")
