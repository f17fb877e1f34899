"""One typed config tree: dataclasses loaded from YAML, `a.b=value` overrides, strict keys.

Precedence is CLI overrides > file > defaults. An unknown key or a value of the wrong
type is a `UserError` naming the dotted key (and the near key, for typos).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cot_transplant.errors import UserError, suggest

VARIANTS = ("joint", "frozen-arguer", "text-only", "shared", "shuffled-kv", "swapped-kv", "no-argument",
            "adversarial")
RESIDUAL_DTYPES = ("float64",)
DONORS = ("random", "length-matched")
LOGGERS = ("tensorboard", "wandb", "mlflow")
# Keys that did nothing and were removed: a config that sets one is refused with its reason; a run's or a sweep's
# own saved config (written with every key of its day) has them dropped when read back (`without_removed`).
REMOVED = {"eval.n_boot": "one split's f_c interval is Wilson's (no resampling); delete the key"}


@dataclass
class SynthConfig:
    n: int = 400  # rows to generate when data.path is empty
    seed: int = 0  # generator seed (independent of the training seed)
    steps: list[int] = field(default_factory=lambda: [2, 3, 4, 5])  # allowed solution lengths
    error_kind: str = "mix"  # arithmetic | wrong-operation | dropped-quantity | misread-number | unit-rate | mix
    error_step: str = "random"  # first | middle | last | random
    argument_accuracy: float = 0.594  # P(choice argument picks the correct candidate); original: 0.594
    short: bool = False  # compact wording: fewer tokens per row, faster on CPU
    planted: bool = False  # positive control (data/plant.py): correctness readable from the arguer's states only


@dataclass
class DataConfig:
    path: str | None = None  # CSV/JSONL/Parquet file; empty -> synthetic rows from data.synthetic
    synthetic: SynthConfig = field(default_factory=SynthConfig)
    # random (by row: a repeated question may sit in train and test; kept for earlier runs' numbers) | grouped
    # (random, but all rows of a question in one split) | original (the original study's 275 test rows; needs its
    # 2,748-row CSV; val carved by question; train/val rows whose question is in a test row are dropped)
    split: str = "random"
    val_fraction: float = 0.1  # share of rows for checkpoint selection (of the train part for `original`)
    test_fraction: float = 0.1  # share of rows held out for reporting (ignored for `original`)
    split_seed: int = 1  # seeds the split only, so training seeds share one split
    mask: bool = False  # replace the choice argument's candidate identifiers by `_` (original masked run)
    # original | none: every row's choice argument empty in the chooser prompt, for every variant (as the
    # `no-argument` variant does for itself); the argument then carries nothing and the base rate is chance
    argument: str = "original"
    # Graded positive control on these rows (data/plant.py): this share of rows (round(f * n)) has the arguer read
    # a verdict on each candidate, the rest read "hidden"; the chooser's text always reads "hidden". 0: off
    planted_fraction: float = 0.0
    planted_position: str = "end"  # end: the verdict as a suffix of each candidate | start: as a prefix
    planted_seed: int = 0  # picks the planted rows (independent of split_seed; nested across fractions)
    skip_invalid: bool = False  # skip invalid rows (counted) instead of refusing the file
    max_rows: int | None = None  # use only the first N rows (quick trials)


@dataclass
class ModelConfig:
    name: str = "smollm2"  # 'smollm2' (bundled, offline), a local dir, a Hugging Face id, or tiny-llama/tiny-qwen2
    dtype: str = "fp32"  # fp32 | bf16 | fp16: bf16 halves memory on GPUs; fp32 on CPU
    attn_implementation: str | None = None  # eager | sdpa | flash_attention_2 (CUDA + flash-attn only)
    load_in_8bit: bool = False  # bitsandbytes 8-bit base (the original's 7B setting; CUDA only)
    load_in_4bit: bool = False  # bitsandbytes 4-bit base (CUDA only)
    bnb_4bit_quant_type: str = "nf4"  # 4-bit: nf4 (QLoRA's, better for normal weights) | fp4
    bnb_4bit_compute_dtype: str = "bf16"  # 4-bit: the dtype its matmuls run in; bf16 (fast, safe range) | fp16 | fp32
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% slower
    trust_remote_code: bool = False  # run model code from the hub; only for models you trust
    device: str = "auto"  # auto | cpu | cuda
    residual_dtype: str | None = None  # float64: residual adds in float64 (the original); llama/mistral/qwen2 only


@dataclass
class RoleConfig:
    model: str | None = None  # this role's base model; None -> model.name (one base, two adapters)


@dataclass
class LoraConfig:
    r: int = 16  # adapter rank: capacity vs parameters
    alpha: int = 32  # scaling = alpha / r
    dropout: float = 0.05  # LoRA dropout; 0 makes steps exactly reproducible across code paths
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    init_adapter: str | None = None  # a saved LoRA adapter dir to start both roles from (the original used alpaca-lora-7b)


@dataclass
class PromptConfig:
    template: str = "alpaca-json"  # alpaca-json (original structure) | chat (the model's chat template, compact)
    template_file: str | None = None  # YAML with `arguer` and `chooser` template strings; overrides `template`
    max_tokens: int | None = None  # longest chooser/arguer prompt allowed; None -> the model's context
    overflow: str = "skip"  # skip (counted) | truncate (cut each argument's tail to fit)


@dataclass
class TransplantConfig:
    site: str = "kv"  # kv | k | v | residual
    layers: list[int] | None = None  # None -> every layer
    shift: bool = True  # the original alignment: spans one token earlier in both passes
    fraction: float = 1.0  # transplant only the first fraction of each argument's span (truncation study)
    # shuffled-kv donors: random (a seeded derangement) | length-matched (each donor's candidates have token lengths
    # near the row's own, so length cannot carry the signal; the pairing follows the lengths, not the seed)
    donors: str = "random"
    # replace: the arguer's K/V take the candidates' place (the original) | append: the chooser reads the candidates
    # itself and its later tokens also attend to the arguer's K/V there (append vs text-only: what the states add)
    mode: str = "replace"


@dataclass
class OptimConfig:
    lr: float = 3e-4  # AdamW learning rate (original 3e-4)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-16  # the original's AdamW eps
    weight_decay: float = 0.0  # original 0; the study named it as a next step
    max_grad_norm: float | None = None  # clip the global grad norm; None = off (original)
    warmup_steps: int = 0  # linear warm-up in optimizer steps; 0 = constant lr (original)


@dataclass
class TrainConfig:
    epochs: float = 1.0  # passes over the train split (fractions allowed)
    max_samples: int | None = None  # stop after this many train samples (overrides epochs)
    batch_size: int = 2  # rows per forward (sub-batch): memory vs speed
    accumulate_to: int = 128  # rows per optimizer step (gradient accumulation); original 128
    log_every: int = 1  # optimizer steps between train log lines
    max_nonfinite: int = 5  # consecutive non-finite losses that stop the run
    oom_split: bool = False  # on out-of-memory, retry the sub-batch split in half (else count and skip)
    # Dynamic loss scaling over both backward phases (scale grows, backs off on inf/nan, skipped steps counted):
    # auto = on for model.dtype fp16 (whose small gradients underflow to 0 without it), off otherwise | on | off
    loss_scaling: str | bool = "auto"
    fast_path: str | bool = "auto"  # auto: the exact fast path where it applies (docs/fastpath.md) | off: reference
    # Fast path attention in blocks of this many queries over only the keys they see: less work on long rows;
    # 0 runs one call of the model's own attention over the whole pattern (every pair, more memory).
    fast_path_block: int = 64
    fast_path_gap: int = 16  # unseen keys between two seen ranges up to which a block reads them as one range
    # Fast path: the arguer's span states per row kept in memory up to this many GiB and reused where they cannot
    # change (frozen-arguer training, every evaluation of fixed adapters); 0 turns the cache off.
    arguer_cache_gib: float = 4.0
    bucket_by_length: bool = True  # sub-batches of similar length within each optimizer step: less padding, same sum
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        if isinstance(self.fast_path, bool):  # YAML reads a bare `off` as false (and `on` as true)
            self.fast_path = "auto" if self.fast_path else "off"
        if isinstance(self.loss_scaling, bool):
            self.loss_scaling = "on" if self.loss_scaling else "off"


@dataclass
class LossConfig:
    choice_only: bool = False  # CE over the two choice tokens instead of the full vocabulary (original: full)


@dataclass
class EvalConfig:
    every: int = 128  # train samples between evaluations (original 128)
    splits: list[str] = field(default_factory=lambda: ["val", "test"])
    batch_size: int = 8  # rows per eval forward
    at_start: bool = True  # evaluate once before training (samples = 0)
    # train samples at which to evaluate (e.g. a log-spaced learning curve: [64, 160, 320, 640]), instead of
    # every `every` samples; the end of training is always evaluated
    at: list[int] | None = None


@dataclass
class CheckpointConfig:
    every: int = 1  # optimizer steps between checkpoints
    keep: int = 2  # most recent checkpoints kept
    at_eval: bool = False  # also checkpoint at each evaluation (eval-only controls need the validation-chosen one)


@dataclass
class RunConfig:
    name: str | None = None  # run directory name; default <config stem>-<variant>-<time>
    dir: str | None = None  # parent directory; default ./runs
    # Where metrics.jsonl is mirrored (docs/tracking.md): tensorboard | wandb | mlflow; the last two are optional
    # extras (pip install 'cot-transplant[wandb]') and write offline inside the run dir unless the environment says
    loggers: list[str] = field(default_factory=lambda: ["tensorboard"])
    tensorboard: bool | None = None  # older spelling: false drops tensorboard from run.loggers, true adds it
    progress: bool = True  # tqdm progress bars

    def __post_init__(self) -> None:
        if self.tensorboard is not None:  # folded into run.loggers, so the resolved config says it once
            others = [name for name in self.loggers if name != "tensorboard"]
            self.loggers = ["tensorboard", *others] if self.tensorboard else others
            self.tensorboard = None


@dataclass
class Config:
    # joint | frozen-arguer | text-only | shared | shuffled-kv | swapped-kv | no-argument | adversarial
    variant: str = "joint"
    seed: int = 0  # training seed: adapter init, data order, dropout
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    # Two different bases (same K/V shapes) cost twice the memory; the tokenizer stays model.name's.
    arguer: RoleConfig = field(default_factory=RoleConfig)
    chooser: RoleConfig = field(default_factory=RoleConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    transplant: TransplantConfig = field(default_factory=TransplantConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        validate(self)


def validate(cfg: Config) -> None:
    """Checks across keys that types alone cannot express."""
    checks = [
        (cfg.variant in VARIANTS, "variant", f"'{cfg.variant}' is not one of {', '.join(VARIANTS)}"),
        (cfg.data.split in ("random", "grouped", "original"), "data.split", "must be random, grouped or original"),
        (cfg.data.argument in ("original", "none"), "data.argument", "must be 'original' or 'none'"),
        (0 <= cfg.data.planted_fraction <= 1, "data.planted_fraction", "must be in [0, 1] (0: no planted rows)"),
        (cfg.data.planted_position in ("end", "start"), "data.planted_position", "must be 'end' or 'start'"),
        (cfg.data.planted_fraction == 0 or cfg.data.path or not cfg.data.synthetic.planted, "data.planted_fraction",
         "data.synthetic.planted rows are planted already; set one of the two"),
        (0 <= cfg.data.val_fraction < 1 and 0 <= cfg.data.test_fraction < 1
         and cfg.data.val_fraction + cfg.data.test_fraction < 1, "data.val_fraction",
         "val and test fractions must be in [0, 1) and sum below 1"),
        (cfg.prompt.template in ("alpaca-json", "chat"), "prompt.template", "must be 'alpaca-json' or 'chat'"),
        (cfg.prompt.overflow in ("skip", "truncate"), "prompt.overflow", "must be 'skip' or 'truncate'"),
        (cfg.transplant.site in ("kv", "k", "v", "residual"), "transplant.site", "must be kv, k, v or residual"),
        (0 < cfg.transplant.fraction <= 1, "transplant.fraction", "must be in (0, 1]"),
        (cfg.transplant.mode in ("replace", "append"), "transplant.mode", "must be replace or append"),
        (cfg.transplant.mode != "append" or (cfg.transplant.site == "kv" and not cfg.transplant.layers),
         "transplant.mode", "append adds whole K/V entries in every layer: it needs transplant.site=kv and every layer"),
        (cfg.transplant.donors in DONORS, "transplant.donors", f"must be one of {', '.join(DONORS)}"),
        (cfg.train.batch_size >= 1, "train.batch_size", "must be >= 1"),
        (cfg.train.fast_path in ("auto", "off"), "train.fast_path", "must be 'auto' or 'off'"),
        (cfg.train.fast_path_block >= 0 and cfg.train.fast_path_gap >= 0, "train.fast_path_block",
         "fast_path_block and fast_path_gap must be >= 0"),
        (cfg.train.arguer_cache_gib >= 0, "train.arguer_cache_gib", "must be >= 0 (0 turns the cache off)"),
        (cfg.train.accumulate_to >= cfg.train.batch_size and cfg.train.accumulate_to % cfg.train.batch_size == 0,
         "train.accumulate_to", "must be a multiple of train.batch_size"),
        (cfg.eval.every >= 1, "eval.every", "must be >= 1"),
        (cfg.eval.at is None or (all(x >= 1 for x in cfg.eval.at) and list(cfg.eval.at) == sorted(set(cfg.eval.at))),
         "eval.at", "must list train-sample counts >= 1 in increasing order, each once"),
        (set(cfg.eval.splits) <= {"val", "test"}, "eval.splits", "may hold only 'val' and 'test'"),
        (cfg.checkpoint.every >= 1 and cfg.checkpoint.keep >= 1, "checkpoint.every", "every and keep must be >= 1"),
        (set(cfg.run.loggers) <= set(LOGGERS) and len(set(cfg.run.loggers)) == len(cfg.run.loggers), "run.loggers",
         f"may hold each of {', '.join(LOGGERS)} once"),
        (cfg.model.device in ("auto", "cpu", "cuda"), "model.device", "must be auto, cpu or cuda"),
        (not (cfg.model.load_in_8bit and cfg.model.load_in_4bit), "model.load_in_8bit",
         "choose one of load_in_8bit and load_in_4bit"),
        (cfg.model.bnb_4bit_quant_type in ("nf4", "fp4"), "model.bnb_4bit_quant_type", "must be nf4 or fp4"),
        (cfg.model.bnb_4bit_compute_dtype in ("bf16", "fp16", "fp32"), "model.bnb_4bit_compute_dtype",
         "must be bf16, fp16 or fp32"),
        (cfg.train.loss_scaling in ("auto", "on", "off"), "train.loss_scaling", "must be auto, on or off"),
        (not (cfg.model.dtype in ("fp16", "float16") and cfg.train.loss_scaling == "off"), "train.loss_scaling",
         "off with model.dtype=fp16 lets small gradients underflow to 0 silently; use auto/on, or model.dtype=bf16"),
        (cfg.model.residual_dtype in (None, *RESIDUAL_DTYPES), "model.residual_dtype",
         "must be empty (the model's own dtype) or 'float64'"),
        (cfg.variant != "shared" or (cfg.arguer.model or cfg.model.name) == (cfg.chooser.model or cfg.model.name),
         "variant", "'shared' plays both roles with one adapter, so arguer.model and chooser.model must be one model"),
    ]
    for ok, key, message in checks:
        if not ok:
            raise UserError(f"config key '{key}': {message}")


# --- loading -----------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except UserError as exc:
                errors.append(exc)
        raise UserError(f"config key '{key}': expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise UserError(f"config key '{key}': expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"config key '{key}': expected a mapping of {sorted(f.name for f in dataclasses.fields(tp))}, got {value!r}")
        return _build(tp, value, key + ".")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
    raise UserError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")


def _build(cls: type, values: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if f"{prefix}{key}" in REMOVED:
            raise UserError(f"config key '{prefix}{key}' was removed: {REMOVED[f'{prefix}{key}']}")
        if key not in names:
            raise UserError(f"unknown config key '{prefix}{key}'"
                            f"{suggest(prefix + str(key), [prefix + n for n in names])}")
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    return cls(**kwargs)


def without_removed(values: dict) -> dict:
    """A copy of a saved config's nested `values` without the `REMOVED` keys (which the program wrote, not a user)."""
    import copy

    values = copy.deepcopy(values)
    for dotted in REMOVED:
        *parents, last = dotted.split(".")
        node = values
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return values


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def _parse_override(text: str) -> tuple[list[str], Any]:
    import yaml

    if "=" not in text:
        raise UserError(f"override '{text}': expected key=value, e.g. train.optim.lr=1e-4")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    # YAML reads 1e-4 as a string; accept the usual float spellings.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eE") else value
        except ValueError:
            pass
    return key.strip().split("."), value


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """Set each dotted `key=value` in a nested dict (values parsed as YAML)."""
    for text in overrides:
        path, value = _parse_override(text)
        node = values
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise UserError(f"override '{text}': '{part}' is not a section")
            node = nxt
        node[path[-1]] = value
    return values


def _fix_floats(node: Any) -> Any:
    """YAML 1.1 reads `3e-4` as a string; turn such strings into floats before type checks."""
    if isinstance(node, dict):
        return {k: _fix_floats(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_fix_floats(v) for v in node]
    if isinstance(node, str):
        try:
            return float(node) if any(c in node for c in "eE") and node.strip()[0] in "0123456789.-+" else node
        except ValueError:
            return node
    return node


def read_yaml(path: str | Path) -> dict:
    import yaml

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: config file not found; give a YAML file such as configs/demo.yaml")
    if path.is_dir():
        raise UserError(f"{path}: is a directory; give a YAML config file")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f":{line + 1}" if line is not None else ""
        raise UserError(f"{path}{where}: not valid YAML ({type(exc).__name__}); fix the file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UserError(f"{path}: expected a mapping of config keys at the top level")
    return values


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict | None = None) -> Config:
    """Build a Config from defaults, then `base` or the YAML file, then dotted overrides."""
    values = dict(base or {})
    if path is not None:
        values = read_yaml(path)
    values = apply_overrides(_fix_floats(values), overrides or [])
    return _build(Config, values)


def save_config(cfg: Config, path: str | Path) -> None:
    import yaml

    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")
