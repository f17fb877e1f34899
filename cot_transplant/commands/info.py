"""`cot-transplant info`: versions, device, the default model's cache."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("info", help="versions, device, default model cache, git hash")
    p.set_defaults(func=run)


def run(args) -> int:
    import importlib.metadata as md

    import torch

    from cot_transplant import models
    from cot_transplant.provenance import git_hash

    def version(dist: str) -> str:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return "not installed"

    device = "cuda (" + torch.cuda.get_device_name(0) + ")" if torch.cuda.is_available() else "cpu"
    print(f"cot-transplant {version('cot-transplant')}")
    for dist in ("torch", "transformers", "peft", "accelerate"):
        print(f"{dist:<14}{version(dist)}")
    print(f"{'device':<14}{device}, {torch.get_num_threads()} threads")
    try:
        entry = models.bundled_cache_dir()
        state = "cached" if models.cache_entry_valid(entry) else "not cached (built on first use, ~20 s)"
        print(f"{'default model':<14}SmolLM2-135M-Instruct ({models.bundled_gguf()})")
        print(f"{'model cache':<14}{entry} [{state}]")
    except Exception as exc:  # info must report, not fail
        print(f"{'default model':<14}unavailable: {exc}")
    print(f"{'git':<14}{git_hash() or 'not a checkout'}")
    return 0
