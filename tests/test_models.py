"""The bundled SmolLM2: offline load, cache reuse, corrupt-cache rebuild, a sane answer."""

import os

import pytest

from cot_transplant import models

pytestmark = pytest.mark.bundled


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """A fresh cache dir (seeded from the user's cache when present, so CI builds it once)."""
    import shutil

    src = models.bundled_cache_dir()
    monkeypatch.setenv("COT_TRANSPLANT_CACHE", str(tmp_path / "cache"))
    entry = models.bundled_cache_dir()
    if models.cache_entry_valid(src):
        shutil.copytree(src, entry)
    return entry


def test_bundled_model_loads_offline_from_the_cache_and_answers(private_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import torch

    model = models.load_model()
    assert models.cache_entry_valid(private_cache)
    mtime = (private_cache / "model.safetensors").stat().st_mtime_ns
    tok = models.load_tokenizer()
    assert (private_cache / "model.safetensors").stat().st_mtime_ns == mtime  # second load: from the cache
    # The Q4_1 135M model rambles when left to open its answer; started on the answer it computes it.
    msgs = [{"role": "user", "content": "What is 7 times 5?"}]
    text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False) + "7 times 5 is"
    enc = tok(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=6, do_sample=False)
    assert tok.decode(out[0, enc["input_ids"].shape[1]:]).strip().startswith("35")


def test_corrupt_or_half_written_cache_is_rebuilt(private_cache):
    models.ensure_bundled_cached()
    weights = private_cache / "model.safetensors"
    with open(weights, "r+b") as f:  # flip bytes in the middle: same size, wrong hash
        f.seek(weights.stat().st_size // 2)
        f.write(b"\x00\x01\x02\x03")
    assert not models.cache_entry_valid(private_cache)
    manifest = private_cache / "manifest.json"
    saved = manifest.read_text()
    os.remove(manifest)  # a half-written entry has no manifest
    assert not models.cache_entry_valid(private_cache)
    manifest.write_text(saved)
    models.ensure_bundled_cached()  # rebuilt from the GGUF: valid, and the corrupt bytes are gone
    assert models.cache_entry_valid(private_cache)


def test_unknown_model_offline_is_one_clear_error(monkeypatch):
    from cot_transplant.errors import UserError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variable at import time; mirror it for this already-running process.
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match="could not be loaded"):
        models.load_model("no-such-org/no-such-model")
    with pytest.raises(UserError, match="not found"):
        models.load_model("./no/such/dir")
