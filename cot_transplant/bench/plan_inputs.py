"""What `cot-transplant plan` reads: the model's config.json, a tokenizer, and the run's rows and batches.

Nothing here loads weights. Rows are built as `train/setup.py` builds a run's (same split, template,
length limit and skips); batches as the training loop and `train/evaluate.py` form them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from cot_transplant.config import Config
from cot_transplant.errors import UserError


def model_config(name: str, given: str | None, vocab_size: int):
    """(transformers config, where it came from) of model `name`, or of the config.json `given`.

    Raises:
        UserError: `given` missing, or `name` is a hub id whose config is not in the local cache.
    """
    from transformers import AutoConfig

    from cot_transplant.models import BUNDLED_ALIASES, TINY_FAMILIES, ensure_bundled_cached, tiny_config

    if given:
        path = Path(given)
        directory = path.parent if path.is_file() else path
        if not (directory / "config.json").is_file():
            raise UserError(f"--model-config {given}: no config.json there; give a model's config.json or its "
                            "directory")
        return AutoConfig.from_pretrained(str(directory)), str(directory / "config.json")
    if name in TINY_FAMILIES:
        return tiny_config(name, vocab_size), f"{name} (models.tiny_config)"
    if name in BUNDLED_ALIASES:
        entry = ensure_bundled_cached()
        return AutoConfig.from_pretrained(str(entry)), f"{entry / 'config.json'} (bundled SmolLM2)"
    if Path(name).is_dir() and (Path(name) / "config.json").is_file():
        return AutoConfig.from_pretrained(name), str(Path(name) / "config.json")
    try:
        return AutoConfig.from_pretrained(name, local_files_only=True), f"{name} (local Hugging Face cache)"
    except (OSError, ValueError):
        raise UserError(f"model '{name}': no config.json here or in the local Hugging Face cache; give "
                        "--model-config PATH (e.g. ../shared/model-shapes/llama-7b/config.json)") from None


def plan_tokenizer(name: str) -> tuple[object, str, str | None]:
    """(tokenizer, its name, a note) for model `name`: its own where it is here, else the bundled SmolLM2's."""
    from transformers import AutoTokenizer

    from cot_transplant.models import BUNDLED_ALIASES, TINY_FAMILIES, load_tokenizer

    if name in TINY_FAMILIES or name in BUNDLED_ALIASES:
        return load_tokenizer(name), "smollm2 (bundled)", None
    try:
        tok = AutoTokenizer.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError, TypeError):
        note = (f"the tokenizer of '{name}' is not available offline: token lengths are the bundled SmolLM2 "
                "tokenizer's, not the model's own (its lengths differ; its ids may exceed the model's vocabulary, "
                "which the meta device does not check)")
        return load_tokenizer("smollm2"), "smollm2 (bundled stand-in)", note
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok, name, None


@dataclass
class Rows:
    """The run's tokenized rows: the train split, the evaluated splits, and what the length limit skipped."""

    train: list
    evaluated: dict[str, list]
    skipped: dict[str, int]


def build_rows(cfg: Config, template, tokenizer, limit: int | None) -> Rows:
    """The train and evaluated splits' examples, built as `train/setup.py` builds a run's."""
    from cot_transplant.runs.records import load_records, split_records
    from cot_transplant.train.setup import build_examples

    records = load_records(cfg)
    splits = split_records(cfg, records)
    records = [dataclasses.replace(r, row_id=i) for i, r in enumerate(records)]
    built = {split: build_examples(records, splits[split], cfg, template, tokenizer, limit)
             for split in ("train", *cfg.eval.splits) if split in splits}
    if not built["train"][0]:
        raise UserError("data: no train rows left after the length limit; raise prompt.max_tokens or set "
                        "prompt.overflow=truncate")
    return Rows(built["train"][0], {s: built[s][0] for s in cfg.eval.splits if s in built and built[s][0]},
                {s: skipped for s, (_, skipped) in built.items()})


def longest(examples: list, rows: int) -> list:
    """The `rows` examples with the most tokens: the sub-batch that needs the most memory."""
    return sorted(examples, key=lambda e: e.n_tokens)[-rows:]


def sub_batches(examples: list, cfg: Config) -> list[list]:
    """One epoch's training sub-batches as the loop forms them (epoch 0's order, length buckets per step)."""
    from cot_transplant.train.batches import by_length
    from cot_transplant.train.loop import epoch_order

    order, size, out = epoch_order(len(examples), cfg.seed, 0), cfg.train.batch_size, []
    for i in range(0, len(order), cfg.train.accumulate_to):
        step = order[i: i + cfg.train.accumulate_to]
        step = by_length(step, examples) if cfg.train.bucket_by_length else step
        out += [[examples[j] for j in step[k: k + size]] for k in range(0, len(step), size)]
    return out


def eval_batches(evaluated: dict[str, list], size: int) -> list[list]:
    """One evaluation's batches over the evaluated splits (each sorted by length, as `evaluate.predict` does)."""
    from cot_transplant.train.batches import by_length

    out = []
    for examples in evaluated.values():
        order = by_length(list(range(len(examples))), examples)
        out += [[examples[j] for j in order[k: k + size]] for k in range(0, len(order), size)]
    return out


def evenly(items: list, n: int) -> list:
    """At most `n` of `items`, evenly spaced (all of them when there are fewer)."""
    if len(items) <= n:
        return items
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)]
