"""Everything a run needs before its first step: data, split, prompts, model, optimizer."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

import numpy as np
import torch

from cot_transplant.config import Config
from cot_transplant.data.record import Record
from cot_transplant.data.splits import SPLITS
from cot_transplant.errors import UserError
from cot_transplant.prompts.segments import EmptySpan
from cot_transplant.prompts.templates import choice_token_ids, get_template
from cot_transplant.runs import records as run_records
from cot_transplant.train.adapters import ModelPair, attach_adapters, role_adapters, trainable
from cot_transplant.train.batches import Example, build_example, candidate_lengths, donors, length_matched_donors
from cot_transplant.train.steps import Choice, StepSettings, choose, step_settings
from cot_transplant.train.steps.fast.state_cache import StateCache

CACHE_USES = ("train", "evaluate", "evaluate-once")  # what a session does, for `arguer_cache`


@dataclass
class Session:
    cfg: Config
    model: object
    tokenizer: object
    records: list[Record]
    splits: dict  # row ids per split name (`SPLITS`); data.split original adds `dropped` (splits.json keeps it)
    examples: dict[str, list[Example]]
    skipped: dict[str, int]
    settings: StepSettings
    device: torch.device
    step: Choice  # the step every batch takes (`steps.choose`, once), unless `steps.path_for` falls back
    arguer_cache: StateCache | None  # the arguer's states reused across passes (`arguer_cache`), or None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """The device of this process's model: `cuda:<LOCAL_RANK>` for a GPU (each launched process its own), or cpu."""
    from cot_transplant.models import local_rank

    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("model.device: 'cuda' requested but no CUDA GPU is available; use model.device=cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name != "cuda":
        return torch.device(name)
    rank = local_rank()
    if rank >= torch.cuda.device_count():
        raise UserError(f"LOCAL_RANK={rank} but only {torch.cuda.device_count()} CUDA GPU(s) are visible; "
                        "launch at most one process per GPU")
    torch.cuda.set_device(rank)
    return torch.device("cuda", rank)


def _fits(ex: Example, limit: int | None) -> bool:
    return limit is None or max(len(ex.chooser.ids), len(ex.arguer[0].ids), len(ex.arguer[1].ids)) <= limit


def _shorten(rec: Record, keep: float) -> Record:
    cut = lambda t: t[: max(1, int(len(t) * keep))]  # noqa: E731
    return dataclasses.replace(rec, correct_argument=cut(rec.correct_argument),
                               incorrect_argument=cut(rec.incorrect_argument))


def donor_order(rows: list[Record], cfg: Config, template, tokenizer) -> list[int]:
    """`shuffled-kv` donors within `rows` (positions into it): `transplant.donors` random or length-matched."""
    if cfg.transplant.donors == "length-matched":
        return length_matched_donors([candidate_lengths(build_example(r, template, tokenizer,
                                                                      shift=cfg.transplant.shift))
                                      for r in rows])
    return donors(len(rows), cfg.seed)


def build_examples(records: list[Record], ids: list[int], cfg: Config, template, tokenizer,
                   limit: int | None, variant: str | None = None) -> tuple[list[Example], int]:
    """Tokenized examples for the rows `ids`; rows over `limit` tokens are skipped or truncated (counted).

    `variant`: how the examples are built (default `cfg.variant`; an eval-only control passes its own).
    """
    variant = variant or cfg.variant
    own_text = cfg.transplant.mode == "append"
    by_id = {r.row_id: r for r in records}
    order = donor_order([by_id[i] for i in ids], cfg, template, tokenizer) if variant == "shuffled-kv" else None
    out, skipped = [], 0
    for i, row_id in enumerate(ids):
        rec = by_id[row_id]
        donor = by_id[ids[order[i]]] if order is not None else None
        try:
            ex = build_example(rec, template, tokenizer, shift=cfg.transplant.shift, variant=variant, donor=donor,
                               own_text=own_text)
        except EmptySpan:  # an argument with no tokens has no span to transplant: skipped and counted
            skipped += 1
            continue
        keep = 1.0
        while not _fits(ex, limit) and cfg.prompt.overflow == "truncate" and keep > 0.05:
            keep *= 0.8
            ex = build_example(_shorten(rec, keep), template, tokenizer, shift=cfg.transplant.shift,
                               variant=variant, donor=_shorten(donor, keep) if donor else None, own_text=own_text)
        if _fits(ex, limit) and _spans_match(ex, own_text):
            out.append(ex)
        else:
            skipped += 1
    return out, skipped


def _spans_match(ex: Example, own_text: bool = False) -> bool:
    """Each candidate's arguer span and chooser span must have one length (always true for plain text), unless
    the chooser keeps its own texts beside the states (`own_text`: append); no span may be empty."""
    a1, a2 = (e.spans["argument"] for e in ex.arguer)
    c1, c2 = ex.chooser.spans["candidate_1"], ex.chooser.spans["candidate_2"]
    same = a1[1] - a1[0] == c1[1] - c1[0] and a2[1] - a2[0] == c2[1] - c2[0]
    return (own_text or same) and a1[1] > a1[0] and a2[1] > a2[0] and c1[1] > c1[0] and c2[1] > c2[0]


def split_examples(records: list[Record], splits: dict[str, list[int]], cfg: Config, template, tokenizer,
                   limit: int | None, variant: str | None = None) -> tuple[dict[str, list[Example]], dict]:
    """`build_examples` for every split: (examples, skipped) per split name; `shuffled-kv` donors stay within a split."""
    examples, skipped = {}, {}
    for split, ids in splits.items():
        if split not in SPLITS:  # `dropped` (data.split: original): rows that no split holds
            continue
        examples[split], skipped[split] = build_examples(records, ids, cfg, template, tokenizer, limit, variant)
    return examples, skipped


@dataclass
class ModelSetup:
    """The model a config trains, as `train`, `eval`, the sweep's runs and the bench all build it."""

    model: torch.nn.Module  # one peft model with the variant's adapters, or a ModelPair (two bases)
    bases: list  # the base model(s) under the adapters: [chooser] or [arguer, chooser]
    tokenizer: object
    template: object
    settings: StepSettings
    limit: int | None  # longest prompt: prompt.max_tokens, else the shortest context of the bases
    device: torch.device


def setup_model(cfg: Config) -> ModelSetup:
    """Seed, load the tokenizer, template and base model(s), enable gradient checkpointing and the residual
    dtype (`model.*`), attach the variant's adapters and move to the device.

    Raises:
        UserError: no CUDA for model.device=cuda, two bases whose states do not fit, or a residual dtype
            the model does not support.
    """
    from cot_transplant.models import load_tokenizer

    seed_everything(cfg.seed)
    device = resolve_device(cfg.model.device)
    tokenizer = load_tokenizer(cfg.model.name, trust_remote_code=cfg.model.trust_remote_code)
    template = get_template(cfg.prompt.template, tokenizer, cfg.prompt.template_file)
    choice_ids = choice_token_ids(tokenizer, template)
    arguer_name, chooser_name = role_bases(cfg)
    base = _load_base(cfg, chooser_name, len(tokenizer))
    arguer_base = _load_base(cfg, arguer_name, len(tokenizer)) if arguer_name != chooser_name else None
    bases = [base] if arguer_base is None else [arguer_base, base]
    if arguer_base is not None:
        check_kv_shapes(arguer_base, base, arguer_name, chooser_name, cfg.transplant.site)
    contexts = [c for c in (getattr(b.config, "max_position_embeddings", None) for b in bases) if c]
    limit = cfg.prompt.max_tokens or (min(contexts) if contexts else None)
    for b in bases:
        if cfg.model.gradient_checkpointing:
            b.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            b.config.use_cache = False
        if cfg.model.residual_dtype:
            from cot_transplant.transplant.residual64 import ResidualDtype

            try:
                ResidualDtype(b, getattr(torch, cfg.model.residual_dtype)).install()
            except ValueError as exc:
                raise UserError(f"model.residual_dtype: {exc}; leave it empty for this model") from None
    if arguer_base is None:
        model = attach_adapters(base, cfg.lora, cfg.variant, cfg.seed)
    else:
        # Each base carries one adapter; the chooser's is seeded apart so the two do not start equal.
        model = ModelPair(attach_adapters(arguer_base, cfg.lora, cfg.variant, cfg.seed, names=("arguer",)),
                          attach_adapters(base, cfg.lora, cfg.variant, cfg.seed + 1, names=("chooser",)))
    model = place(model, bases, device)
    model.train()
    return ModelSetup(model, bases, tokenizer, template, step_settings(cfg, choice_ids), limit, device)


def arguer_cache(cfg: Config, use: str) -> StateCache | None:
    """The session's arguer state cache (`train.arguer_cache_gib` large; 0: none), on or off by what the session
    does, decided here alone. `use`:

    - "train": off when the arguer trains (its states change every step), on when it is frozen;
    - "evaluate": on: fixed adapters evaluated over the same rows more than once (the truncation study's fractions);
    - "evaluate-once": off: each row is evaluated once (the `eval` command), so no state would be served twice.
    """
    if use not in CACHE_USES:
        raise ValueError(f"arguer_cache: use must be one of {CACHE_USES}, not {use!r}")
    if cfg.train.arguer_cache_gib <= 0 or use == "evaluate-once":
        return None
    if use == "train" and role_adapters(cfg.variant)[0] in trainable(cfg.variant):
        return None
    return StateCache(int(cfg.train.arguer_cache_gib * 2 ** 30))


def setup(cfg: Config, control: str | None = None, use: str = "evaluate") -> Session:
    """The session of `cfg`: its rows, split and examples, `setup_model`'s model, its step (chosen here, once)
    and its arguer state cache (`arguer_cache(cfg, use)`).

    With `control` (an eval-only control, `swapped-kv` / `shuffled-kv`), the examples are built as that
    variant builds them while the adapters and the step follow `cfg.variant`.
    """
    # The rows come first, so a data error answers before a model loads; reading them draws
    # on no global RNG, so the model's seeding is as if nothing ran before it.
    records = run_records.load_records(cfg)  # looked up here, so a test can substitute its rows
    splits = run_records.split_records(cfg, records)
    # Row ids are positions in the loaded file, so splits.json names rows of the data file.
    records = [dataclasses.replace(r, row_id=i) for i, r in enumerate(records)]
    m = setup_model(cfg)
    examples, skipped = split_examples(records, splits, cfg, m.template, m.tokenizer, m.limit, control)
    if not examples["train"]:
        raise UserError("data: no train rows left after the length limit; raise prompt.max_tokens "
                        "or set prompt.overflow=truncate")
    return Session(cfg, m.model, m.tokenizer, records, splits, examples, skipped, m.settings, m.device,
                   step=choose(m.model, m.settings), arguer_cache=arguer_cache(cfg, use))


def place(model, bases: list, device: torch.device):
    """`model` on `device`: moved, unless a base is quantized (loaded onto its GPU, it refuses `.to()`), in
    which case it must already be there, adapters included (peft puts them beside the weights they adapt)."""
    from cot_transplant.models import is_quantized

    if not any(is_quantized(b) for b in bases):
        return model.to(device)
    where = {p.device for p in model.parameters()}
    if where != {device}:
        raise UserError(f"a quantized base was loaded onto {sorted(map(str, where))}, not this process's {device}; "
                        "leave model.device as auto or cuda and launch one process per GPU")
    return model


def role_bases(cfg: Config) -> tuple[str, str]:
    """The base model names of the arguer and of the chooser (`model.name` unless `arguer.model`/`chooser.model`)."""
    return cfg.arguer.model or cfg.model.name, cfg.chooser.model or cfg.model.name


def _load_base(cfg: Config, name: str, vocab_size: int):
    from cot_transplant.models import load_model

    return load_model(name, dtype=cfg.model.dtype, attn_implementation=cfg.model.attn_implementation,
                      load_in_8bit=cfg.model.load_in_8bit, load_in_4bit=cfg.model.load_in_4bit,
                      trust_remote_code=cfg.model.trust_remote_code, seed=cfg.seed, vocab_size=vocab_size,
                      quant_type=cfg.model.bnb_4bit_quant_type, compute_dtype=cfg.model.bnb_4bit_compute_dtype)


def state_shape(model, site: str) -> tuple[int, int]:
    """(layers, width per layer) of the states a transplant at `site` moves: K/V width or hidden size."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    layers = config.num_hidden_layers
    if site == "residual":
        return layers, config.hidden_size
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return layers, config.num_key_value_heads * head_dim


def check_kv_shapes(arguer_model, chooser_model, arguer_name: str, chooser_name: str, site: str) -> None:
    """Raise UserError unless the arguer's states fit the chooser's (layer count and per-layer width)."""
    a, c = state_shape(arguer_model, site), state_shape(chooser_model, site)
    if a != c:
        what = "hidden size" if site == "residual" else "K/V width (num_key_value_heads * head_dim)"
        raise UserError(f"arguer.model '{arguer_name}' and chooser.model '{chooser_name}' cannot share states: "
                        f"the arguer has {a[0]} layers of {what} {a[1]}, the chooser {c[0]} layers of {c[1]}; "
                        "give two models of one shape (e.g. two checkpoints of one model)")
