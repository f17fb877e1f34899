"""Checkpoints as safetensors and JSON only, written to a temporary directory then renamed.

A checkpoint holds each adapter, the optimizer state (tensors + JSON), every process's RNG
states (python, numpy, torch's CPU generator and its GPU's) and the data cursor, so a resumed
run equals an uninterrupted one on CPUs and GPUs alike (LoRA dropout draws from the GPU's
generator there); and copies of the run's config.yaml and spec.json, so it describes itself.

Each trained adapter is also a directory in peft's own layout (`arguer/`, `chooser/`, or `shared/`:
adapter_config.json + adapter_model.safetensors) that `PeftModel.from_pretrained(base, path)` loads;
`adapter-<name>.safetensors` is the same file under the name runs before that layout read (a hard link).
The run's `chosen/` holds the adapters of the evaluation chosen on validation in the same layout.
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
from cot_transplant.train.adapters import adapter_state, load_adapter_state, save_peft_config


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


def rng_state(device: torch.device) -> dict:
    """This process's random state: python's, numpy's, torch's CPU generator and, on a GPU, that GPU's."""
    np_state = np.random.get_state()
    out = {"python": _jsonable(random.getstate()), "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
           "torch": torch.get_rng_state()}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restore `rng_state`'s output; a GPU state is restored onto `device` when this process runs on a GPU."""
    random.setstate(_tuplify(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_checkpoint(run: Path, step: int, model, adapter_names: list[str], optimizer, state: dict,
                    rng: list[dict] | None = None) -> Path:
    """Write checkpoints/step-<step>/ atomically; `state` is JSON (cursor, counters, metrics lines).

    `rng`: every process's `rng_state`, in rank order (default: this process's, on CPU).

    The run's config.yaml and spec.json are copied in as they are at this step (a resumed run trained
    further has a raised `train.max_samples` / `train.epochs`).
    """
    root = run / "checkpoints"
    root.mkdir(exist_ok=True)
    final = root / f"step-{step}"
    tmp = root / f".tmp-step-{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    about = {"step": step, "samples": state.get("cursor", {}).get("samples")}
    save_adapters(run, tmp, model, adapter_names, about)
    for name in adapter_names:
        _link(tmp / name / "adapter_model.safetensors", tmp / f"adapter-{name}.safetensors")
    tensors, meta = _optimizer_to_files(optimizer)
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "optimizer.json").write_text(json.dumps(meta))
    rng = rng if rng is not None else [rng_state(torch.device("cpu"))]
    save_file({f"{rank}.{k}": v.cpu().contiguous() for rank, r in enumerate(rng) for k, v in r.items()
               if torch.is_tensor(v)}, str(tmp / "rng.safetensors"))
    plain = [{k: v for k, v in r.items() if not torch.is_tensor(v)} for r in rng]
    full = {**state, "step": step, "rng": plain, "adapters": adapter_names, "_provenance": stamp()}
    (tmp / "state.json").write_text(json.dumps(full))
    for name in ("config.yaml", "spec.json"):  # absent only in runs written before spec.json existed
        if (run / name).is_file():
            shutil.copyfile(run / name, tmp / name)
    for f in tmp.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def save_adapters(run: Path, out: Path, model, adapter_names: list[str], about: dict) -> None:
    """Each adapter of `adapter_names` in peft's layout in `out/<name>/`, its base named from RUN/config.yaml."""
    import yaml

    values = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) if adapter_names else {}
    run_about = {"variant": values.get("variant"), "seed": values.get("seed"), **about}
    for name in adapter_names:
        model_name = (values.get(name) or {}).get("model") or values["model"]["name"]  # arguer.model, else model.name
        save_peft_config(model, name, out / name, model_name, run_about)
        weights = out / name / "adapter_model.safetensors"
        save_file(adapter_state(model, name), str(weights), metadata={"format": "pt"})  # as peft writes it


def _link(src: Path, dst: Path) -> None:
    """`dst` as a second name of `src` (one file on disk); a copy where the file system has no hard links."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def save_chosen(run: Path, model, adapter_names: list[str], samples: int) -> bool:
    """Write RUN/chosen/ (each adapter in peft's layout, and chosen.json) when the evaluation at `samples` is the
    one the summary chooses (`summary.summarize`: the best val/f_c so far, ties to the earliest; the latest
    without validation). Returns whether it did. Written to a temporary directory, then renamed.
    """
    from cot_transplant.runs import rundir
    from cot_transplant.runs.summary import select_checkpoint

    evals = [m for m in rundir.read_metrics(run) if m.get("kind") == "eval"]
    try:
        chosen, how = select_checkpoint([m for m in evals if m.get("split") == "val"]), "best val/f_c"
    except ValueError:
        chosen, how = samples, "latest (no validation)"
    if chosen != samples:
        return False
    tmp, final = run / ".tmp-chosen", run / "chosen"
    shutil.rmtree(tmp, ignore_errors=True)
    save_adapters(run, tmp, model, adapter_names, {"samples": samples})
    val = next((m.get("val/f_c") for m in evals if m.get("split") == "val" and m["samples"] == samples), None)
    (tmp / "chosen.json").write_text(json.dumps({"samples": samples, "chosen_by": how, "val/f_c": val,
                                                 "adapters": adapter_names, "_provenance": stamp()}, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return True


def _jsonable(obj):
    if isinstance(obj, tuple):
        return [_jsonable(v) for v in obj]
    return obj


def _tuplify(obj):
    if isinstance(obj, list):
        return tuple(_tuplify(v) for v in obj)
    return obj


def load_checkpoint(path: Path, model, optimizer=None, restore_rng: bool = True, rank: int = 0,
                    device: torch.device = torch.device("cpu")) -> dict:
    """Restore adapters (and optimizer, and process `rank`'s RNG on `device`) from a checkpoint dir; return
    its state JSON."""
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
        set_rng_state(_rng_of(state["rng"], load_file(str(path / "rng.safetensors")), rank), device)
    return state


def _rng_of(plain: list | dict, tensors: dict[str, torch.Tensor], rank: int) -> dict:
    """Process `rank`'s saved RNG state; checkpoints before per-process states held one CPU state for all."""
    if isinstance(plain, dict):
        return {**plain, "torch": tensors["torch"]}
    if rank >= len(plain):
        raise UserError(f"this checkpoint holds the random states of {len(plain)} process(es), not of process "
                        f"{rank}: resume with the number of processes that wrote it")
    return {**plain[rank], **{k.split(".", 1)[1]: v for k, v in tensors.items() if k.split(".", 1)[0] == str(rank)}}
