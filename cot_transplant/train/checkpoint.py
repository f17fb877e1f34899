"""Checkpoints as safetensors and JSON only, written to a temporary directory then renamed.

A checkpoint holds each adapter, the optimizer state (tensors + JSON), the RNG states
(python, numpy, torch) and the data cursor, so a resumed run equals an uninterrupted one;
and copies of the run's config.yaml and spec.json, so it describes itself.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from cot_transplant.errors import UserError
from cot_transplant.provenance import stamp
from cot_transplant.train.adapters import adapter_state, load_adapter_state


def _optimizer_to_files(optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_files(optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    for name, value in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(run: Path, step: int, model, adapter_names: list[str], optimizer, state: dict) -> Path:
    """Write checkpoints/step-<step>/ atomically; `state` is JSON (cursor, counters, metrics lines).

    The run's config.yaml and spec.json are copied in as they are at this step (a resumed run trained
    further has a raised `train.max_samples` / `train.epochs`).
    """
    root = run / "checkpoints"
    root.mkdir(exist_ok=True)
    final = root / f"step-{step}"
    tmp = root / f".tmp-step-{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name in adapter_names:
        save_file(adapter_state(model, name), str(tmp / f"adapter-{name}.safetensors"))
    tensors, meta = _optimizer_to_files(optimizer)
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "optimizer.json").write_text(json.dumps(meta))
    save_file({"torch": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
    np_state = np.random.get_state()
    rng = {"python": _jsonable(random.getstate()),
           "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]}
    full = {**state, "step": step, "rng": rng, "adapters": adapter_names, "_provenance": stamp()}
    (tmp / "state.json").write_text(json.dumps(full))
    for name in ("config.yaml", "spec.json"):  # absent only in runs written before spec.json existed
        if (run / name).is_file():
            shutil.copyfile(run / name, tmp / name)
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def _jsonable(obj):
    if isinstance(obj, tuple):
        return [_jsonable(v) for v in obj]
    return obj


def _tuplify(obj):
    if isinstance(obj, list):
        return tuple(_tuplify(v) for v in obj)
    return obj


def load_checkpoint(path: Path, model, optimizer=None, restore_rng: bool = True) -> dict:
    """Restore adapters (and optimizer, RNG) from a checkpoint dir; return its state JSON."""
    try:
        state = json.loads((path / "state.json").read_text())
    except (OSError, ValueError):
        raise UserError(f"{path}: not a complete checkpoint (state.json missing or damaged)") from None
    for name in state["adapters"]:
        load_adapter_state(model, name, load_file(str(path / f"adapter-{name}.safetensors")))
    if optimizer is not None:
        _optimizer_from_files(optimizer, load_file(str(path / "optimizer.safetensors")),
                              json.loads((path / "optimizer.json").read_text()))
    if restore_rng:
        torch.set_rng_state(load_file(str(path / "rng.safetensors"))["torch"])
        random.setstate(_tuplify(state["rng"]["python"]))
        kind, keys, *rest = state["rng"]["numpy"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    return state
