"""What a GPU would show, checked on a CPU: one device path, per-process loading and reductions, loss
scaling over both backward phases, every process's random state in checkpoints, out-of-memory retries
that leave no partial gradient (issue "Runs where its users run it", problems 1-6).

Each test fails when its problem is planted back; the meta device stands in for "not the CPU": a
tensor put there by the one device path shows it, and a CPU tensor left behind shows too.
"""

import dataclasses

import pytest
import torch

from cot_transplant.config import load_config
from cot_transplant.errors import UserError
from cot_transplant.train import evaluate, loop
from cot_transplant.train.adapters import adapter_params
from cot_transplant.train.checkpoint import load_checkpoint, rng_state, save_checkpoint
from cot_transplant.train.distributed import Dist, refuse_unsupported
from cot_transplant.train.steps import SubBatchResult
from cot_transplant.train.setup import setup
from train_helpers import tiny_cfg

META = torch.device("meta")


def _on(batch, device) -> bool:
    return all(getattr(batch, k).device == device for k in batch.TENSORS)


def _fake_figures(batch):
    rows = len(batch.row_ids)
    return torch.ones(rows), torch.full((rows,), 0.6), torch.full((rows,), 0.4)


# --- 1. one device path -----------------------------------------------------------------------------------


def test_evaluation_hands_its_batches_to_the_model_on_the_model_s_device(tiny_rows, monkeypatch):
    session = setup(tiny_cfg())
    seen = []

    def forward(model, batch, settings, step, cache=None):
        seen.append(_on(batch, META))
        return (*_fake_figures(batch), None)

    monkeypatch.setattr(evaluate, "forward", forward)
    session.device = META  # as a GPU run: the model's device is not the CPU
    pred = evaluate.predict(session, "test")
    assert seen and all(seen)
    assert len(pred["row_id"]) == len(session.examples["test"])
    assert sorted(pred["label"]) == sorted(e.label for e in session.examples["test"])
    hidden = evaluate.predict(session, "test", fraction=0.5, hide_tail=True)  # the truncation study's path
    assert all(seen) and hidden["row_id"] == pred["row_id"]


def test_training_hands_its_sub_batches_to_the_model_on_the_model_s_device(tiny_rows, monkeypatch):
    session = setup(tiny_cfg())
    seen = []

    def forward_backward(model, batch, settings, step, scale, cache=None):
        seen.append(_on(batch, META))
        return SubBatchResult(*_fake_figures(batch))

    monkeypatch.setattr(loop, "forward_backward", forward_backward)
    session.device = META
    params = [p for _, p in adapter_params(session.model, "chooser")]
    ran, skipped = loop._sub_batch(session, session.examples["train"][:2], params, 1.0)
    assert seen == [True] and skipped == 0 and len(ran) == 1


def test_the_bench_batches_on_its_device(tiny_rows):
    from cot_transplant.bench.runner import BenchOptions, make_source

    session = setup(tiny_cfg())
    records = [dataclasses.replace(r, row_id=i) for i, r in enumerate(session.records)]
    opts = BenchOptions(rows=4)
    from cot_transplant.prompts.templates import get_template

    template = get_template("chat", session.tokenizer)
    source = make_source("tiny", records, opts, session.cfg, template, session.tokenizer, None, META)
    assert all(_on(b, META) for b in source.train_batches + source.eval_batches)


# --- 2. reductions and launch settings ----------------------------------------------------------------------


def test_reductions_run_on_the_process_group_s_device(monkeypatch):
    import accelerate.utils

    devices = []

    def reduce(tensor, reduction="sum"):
        devices.append(tensor.device)
        return torch.zeros((), device="cpu") if tensor.device == META else tensor

    monkeypatch.setattr(accelerate.utils, "reduce", reduce)
    dist = Dist()
    dist.world, dist.device = 2, META  # as under NCCL: only this process's GPU may be reduced on
    assert dist.all_finite(True)
    assert devices == [META]
    param = torch.nn.Parameter(torch.ones(2))
    param.grad = torch.ones(2)  # on the CPU, where NCCL would refuse it
    with pytest.raises(RuntimeError, match="cannot be reduced"):
        dist.sum_grads([param])


@pytest.mark.parametrize("env, named", [
    ({"ACCELERATE_USE_FSDP": "true"}, "FSDP"),
    ({"ACCELERATE_USE_DEEPSPEED": "true"}, "DeepSpeed"),
    ({"ACCELERATE_MIXED_PRECISION": "bf16"}, "mixed_precision=bf16"),
    ({"ACCELERATE_MIXED_PRECISION": "fp16"}, "mixed_precision=fp16"),
])
def test_launch_settings_the_loop_would_ignore_are_refused(env, named):
    with pytest.raises(UserError, match=named) as err:
        refuse_unsupported(env)
    assert "supported:" in str(err.value).lower() and "\n" not in str(err.value)


def test_plain_data_parallel_launches_are_accepted():
    refuse_unsupported({"ACCELERATE_MIXED_PRECISION": "no", "ACCELERATE_USE_FSDP": "false", "WORLD_SIZE": "2"})


# --- 3. loading per process; quantized models stay where they were loaded ---------------------------------


def test_each_process_loads_its_quantized_base_on_its_own_gpu(monkeypatch):
    import importlib.util

    import transformers

    import cot_transplant.models as models

    calls = []
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    real_find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: object() if n == "bitsandbytes" else real_find(n, *a))
    monkeypatch.setattr(models, "resolve_model_path", lambda name: "/nowhere")
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda path, **kw: calls.append(kw) or "model")
    assert models.load_model("some/7b", dtype="bf16", load_in_4bit=True) == "model"
    assert models.load_model("some/7b", dtype="bf16", load_in_8bit=True) == "model"
    four, eight = (c["quantization_config"] for c in calls)
    assert [c["device_map"] for c in calls] == [{"": 1}, {"": 1}]
    assert four.load_in_4bit and four.bnb_4bit_quant_type == "nf4" and four.bnb_4bit_compute_dtype == torch.bfloat16
    assert eight.load_in_8bit and not eight.load_in_4bit


def test_a_tiny_model_is_never_silently_left_unquantized():
    import cot_transplant.models as models

    with pytest.raises(UserError, match="cannot be loaded quantized"):
        models.load_model("tiny-llama", load_in_8bit=True, vocab_size=64)


def test_four_bit_settings_come_from_the_config():
    from cot_transplant.models import quantized_load_kwargs

    kw = quantized_load_kwargs(False, True, 3, quant_type="fp4", compute_dtype="fp16")
    assert kw["device_map"] == {"": 3}
    assert kw["quantization_config"].bnb_4bit_quant_type == "fp4"
    assert kw["quantization_config"].bnb_4bit_compute_dtype == torch.float16
    with pytest.raises(UserError, match="bnb_4bit_quant_type"):
        load_config(None, ["model.bnb_4bit_quant_type=int4"])


class _Quantized(torch.nn.Module):
    """A stand-in for a bitsandbytes model: flagged as quantized, and `.to()` refuses, as theirs does."""

    is_loaded_in_8bit = True

    def __init__(self, device):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(2, device=device))

    def to(self, *args, **kwargs):
        raise ValueError("`.to` is not supported for `8-bit` bitsandbytes models")


def test_a_quantized_model_is_never_moved():
    from cot_transplant.train.setup import place

    model = _Quantized(META)
    assert place(model, [model], META) is model
    with pytest.raises(UserError, match="quantized base was loaded onto"):
        place(model, [model], torch.device("cpu"))
    plain = torch.nn.Linear(2, 2)
    assert place(plain, [plain], META).weight.device == META


def test_each_process_takes_its_own_gpu(monkeypatch):
    from cot_transplant.train.setup import resolve_device

    chosen = []
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    assert resolve_device("auto") == torch.device("cuda", 1) and chosen == [1]
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(UserError, match="LOCAL_RANK=2"):
        resolve_device("cuda")


# --- 4. precision ------------------------------------------------------------------------------------------


def test_fp16_without_loss_scaling_is_refused_and_auto_scales_it():
    with pytest.raises(UserError, match="underflow"):
        load_config(None, ["model.dtype=fp16", "train.loss_scaling=off"])
    assert loop.make_scaler(load_config(None, ["model.dtype=fp16"]), torch.device("cpu")) is not None
    assert loop.make_scaler(load_config(None, ["model.dtype=bf16"]), torch.device("cpu")) is None


def test_the_gpu_configs_train_in_bf16():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "configs"
    for name in ("original-unmasked.yaml", "original-masked.yaml"):
        cfg = load_config(str(root / name), [])
        assert cfg.model.dtype == "bf16" and loop.make_scaler(cfg, torch.device("cpu")) is None, name


def _adapters(session) -> dict:
    return {n: p.detach().clone() for name in ("arguer", "chooser") for n, p in adapter_params(session.model, name)}


def _one_step(tiny_rows, scaler, *overrides) -> dict:
    session = setup(tiny_cfg(*overrides))
    torch.manual_seed(2)
    for name in ("arguer", "chooser"):  # nonzero LoRA B: both adapters' gradients are nonzero
        for n, p in adapter_params(session.model, name):
            if "lora_B" in n:
                p.data.normal_(0, 0.05)
    start = _adapters(session)
    optimizer = loop.make_optimizer(session)
    step = loop.train_step(session, optimizer, [0, 1, 2, 3], 1e-2, Dist(), scaler)
    end = _adapters(session)
    grads = {n: p.grad.clone() for name in ("arguer", "chooser") for n, p in adapter_params(session.model, name)
             if p.grad is not None}  # as the optimizer saw them: unscaled
    return {"step": step, "moved": {n: end[n] - start[n] for n in end}, "grads": grads}


def test_loss_scaling_covers_both_backward_phases(tiny_rows):
    """A power-of-two scale is exact in fp32: scaled-then-unscaled gradients equal unscaled ones, in both
    adapters, and so does the step. (The gradients are compared: AdamW's first step hardly sees a scale.)"""
    plain = _one_step(tiny_rows, None)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    scaled = _one_step(tiny_rows, scaler)
    assert scaled["step"]["loss_scale"] == 2.0 ** 12 and not scaled["step"]["scaler_skipped"]
    nonzero = [n for n, g in plain["grads"].items() if g.abs().max() > 0]  # not the arguer's last-layer queries
    assert any(".arguer." in n for n in nonzero) and any(".chooser." in n for n in nonzero)
    assert scaled["grads"].keys() == plain["grads"].keys()
    for n, g in plain["grads"].items():
        torch.testing.assert_close(scaled["grads"][n], g, rtol=1e-6, atol=0, msg=n)
    for n, d in plain["moved"].items():
        torch.testing.assert_close(scaled["moved"][n], d, rtol=1e-6, atol=1e-9, msg=n)


def test_an_overflowing_scale_skips_the_step_counts_it_and_backs_off(tiny_rows):
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 127)  # every gradient overflows to inf
    out = _one_step(tiny_rows, scaler)
    assert out["step"]["scaler_skipped"] and out["step"]["finite"]
    assert all(torch.all(d == 0) for d in out["moved"].values())
    assert scaler.get_scale() == 2.0 ** 126
    cursor = loop.Cursor()
    cursor.advance(4, out["step"])
    assert cursor.scaler_skipped == 1


def test_a_scaled_step_with_no_gradient_at_all_is_counted_not_a_crash(tiny_rows, monkeypatch):
    """Every sub-batch's loss non-finite: no backward ran, so the scaler has nothing to check; the step is
    skipped as non-finite and the scale stays."""
    session = setup(tiny_cfg())

    def nan_loss(model, batch, settings, step, scale, cache=None):
        rows = len(batch.row_ids)
        return SubBatchResult(torch.full((rows,), float("nan")), torch.full((rows,), 0.5), torch.full((rows,), 0.5))

    monkeypatch.setattr(loop, "forward_backward", nan_loss)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    start = _adapters(session)
    out = loop.train_step(session, loop.make_optimizer(session), [0, 1, 2, 3], 1e-2, Dist(), scaler)
    assert not out["finite"] and not out["scaler_skipped"] and out["loss_scale"] == 2.0 ** 10
    assert scaler.get_scale() == 2.0 ** 10
    assert all(torch.equal(start[n], p) for n, p in _adapters(session).items())


def test_fp16_gradients_underflow_to_zero_without_the_scale(tiny_rows):
    """Why fp16 needs the scale: a loss weighted 2^-30 (a 7B model's gradients reach such sizes) backpropagates
    as zeros through an fp16 model, whose smallest number is 2^-24; times a loss scale of 2^24 it does not."""
    session = setup(tiny_cfg("model.dtype=fp16"))
    torch.manual_seed(0)
    for name in ("arguer", "chooser"):
        for n, p in adapter_params(session.model, name):
            if "lora_B" in n:
                p.data.normal_(0, 0.05)
    params = {name: [p for _, p in adapter_params(session.model, name)] for name in ("arguer", "chooser")}
    everything = params["arguer"] + params["chooser"]
    rows = session.examples["train"][:2]

    def largest(scale: float) -> dict:
        session.model.zero_grad(set_to_none=True)
        loop._sub_batch(session, rows, everything, scale)
        return {name: max((p.grad.abs().max().item() for p in ps if p.grad is not None), default=0.0) / scale
                for name, ps in params.items()}

    unscaled, scaled = largest(2.0 ** -30), largest(2.0 ** -30 * 2.0 ** 24)
    assert unscaled["arguer"] == 0.0
    assert scaled["arguer"] > 0 and scaled["chooser"] > 0


# --- 5. every process's random state --------------------------------------------------------------------


def test_checkpoints_keep_and_restore_each_process_s_gpu_random_state(tmp_path, monkeypatch):
    gpu = {0: torch.arange(16, dtype=torch.uint8), 1: torch.arange(16, 32, dtype=torch.uint8)}
    restored = {}
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: gpu[device.index].clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.update({device.index: state}))
    states = [rng_state(torch.device("cuda", r)) for r in (0, 1)]
    assert all("cuda" in s for s in states)
    model = torch.nn.Linear(2, 2)
    monkeypatch.setattr("cot_transplant.train.checkpoint.adapter_state", lambda m, n: {})
    ckpt = save_checkpoint(tmp_path, 1, model, [], torch.optim.AdamW(model.parameters()), {"cursor": {}}, states)
    before = torch.rand(3)
    load_checkpoint(ckpt, model, rank=1, device=torch.device("cuda", 1))
    assert torch.equal(restored[1], gpu[1])
    after = torch.rand(3)
    load_checkpoint(ckpt, model, rank=0, device=torch.device("cuda", 0))
    assert torch.equal(restored[0], gpu[0])
    assert torch.equal(torch.rand(3), after) and not torch.equal(before, after)  # the CPU generator too
    with pytest.raises(UserError, match="2 process"):
        load_checkpoint(ckpt, model, rank=2, device=torch.device("cuda", 2))


def test_checkpoints_written_before_per_process_states_still_resume(tmp_path):
    import json

    from safetensors.torch import save_file

    from cot_transplant.train.checkpoint import _rng_of

    state = rng_state(torch.device("cpu"))
    old = {"python": state["python"], "numpy": state["numpy"]}
    save_file({"torch": state["torch"]}, str(tmp_path / "rng.safetensors"))
    (tmp_path / "state.json").write_text(json.dumps({"rng": old}))
    from safetensors.torch import load_file

    got = _rng_of(old, load_file(str(tmp_path / "rng.safetensors")), rank=1)
    assert torch.equal(got["torch"], state["torch"])


# --- 6. out-of-memory -----------------------------------------------------------------------------------


def test_out_of_memory_in_the_second_phase_leaves_no_partial_gradient(tiny_rows, monkeypatch):
    """The chooser's gradients are added in phase 1; an OOM in phase 2 must not leave them behind."""
    from cot_transplant.train.steps import backward

    session = setup(tiny_cfg("train.oom_split=true"))
    for n, p in adapter_params(session.model, "arguer"):
        if "lora_B" in n:
            p.data.normal_(0, 0.05)
    params = [p for name in ("arguer", "chooser") for _, p in adapter_params(session.model, name)]
    rows = session.examples["train"][:4]

    def grads():
        return [None if p.grad is None else p.grad.clone() for p in params]

    session.model.zero_grad(set_to_none=True)
    loop._sub_batch(session, rows[:2], params, 0.25)  # an earlier sub-batch's gradients, to be kept
    loop._sub_batch(session, rows[2:], params, 0.25)
    whole = grads()

    calls = []
    real = backward.backward_from_states

    def backward_from_states(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # phase 2 of the second sub-batch, after its phase 1 added the chooser's gradients
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(backward, "backward_from_states", backward_from_states)
    session.model.zero_grad(set_to_none=True)
    loop._sub_batch(session, rows[:2], params, 0.25)
    ran, skipped = loop._sub_batch(session, rows[2:], params, 0.25)
    assert len(calls) == 4 and skipped == 0 and len(ran) == 2  # it failed once, then ran in halves
    for g, w in zip(grads(), whole):
        assert (g is None) == (w is None)
        if w is not None:
            # Two halves sum in another order than one sub-batch: float rounding only (a chooser gradient
            # left behind by the failed attempt would add a whole sub-batch's share).
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5 * w.abs().max().item())
    assert any(w is not None and w.abs().max() > 0 for w in whole)


def test_out_of_memory_without_splitting_skips_the_rows_and_keeps_the_rest(tiny_rows, monkeypatch):
    from cot_transplant.train.steps import backward

    session = setup(tiny_cfg("train.oom_split=false"))
    params = [p for name in ("arguer", "chooser") for _, p in adapter_params(session.model, name)]
    rows = session.examples["train"][:4]
    session.model.zero_grad(set_to_none=True)
    loop._sub_batch(session, rows[:2], params, 0.25)
    kept = [None if p.grad is None else p.grad.clone() for p in params]

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory.")

    monkeypatch.setattr(backward, "backward_from_states", oom)
    ran, skipped = loop._sub_batch(session, rows[2:], params, 0.25)
    assert ran == [] and skipped == 2
    for p, k in zip(params, kept):
        assert (p.grad is None) == (k is None)
        if k is not None:
            assert torch.equal(p.grad, k)


def test_a_batch_on_the_model_s_device_keeps_its_host_copy(tiny_rows, monkeypatch):
    """The steps' span checks and index plans read the host copy collated beside the device batch: no
    read back from the device (a sync per sub-batch on a GPU)."""
    from cot_transplant.train.batches import Batch, collate
    from cot_transplant.train.steps import host_copy

    session = setup(tiny_cfg())
    host = collate(session.examples["train"][:2], session.tokenizer.pad_token_id)
    moved = collate(session.examples["train"][:2], session.tokenizer.pad_token_id, device=META)
    assert _on(moved, META) and moved.host is not None and moved.host.row_ids == host.row_ids
    assert torch.equal(moved.host.chooser_mask, host.chooser_mask)
    monkeypatch.setattr(Batch, "to", lambda self, device: pytest.fail("copied back from the device"))
    assert host_copy(moved) is moved.host
