"""`cot-transplant plan`: hand-checked counts and bytes, the meta trace's memory against a real run, the
JSON round trip, the 7B verdict, and the trace catching a step that makes a tensor off the model's device."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from cot_transplant.bench import plan as planning
from cot_transplant.bench.plan_memory import adapter_figures, base_bytes, base_shape
from cot_transplant.bench.trace import (META, StepMeter, TraceError, attach_meta_adapters, build_meta_base,
                                        gpu_kernels, set_checkpointing, trace_step)
from cot_transplant.cli import main
from cot_transplant.config import load_config
from cot_transplant.models import tiny_config
from cot_transplant.train import steps
from cot_transplant.train.adapters import attach_adapters

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
LLAMA_7B = SHARED / "model-shapes" / "llama-7b" / "config.json"
ORIGINAL = Path(__file__).resolve().parents[2] / "configs" / "original-unmasked.yaml"
TINY = ("model.name=tiny-llama", "model.dtype=bf16", "prompt.template=chat", "data.synthetic.n=40",
        "data.synthetic.short=true", "lora.r=4", "lora.alpha=8", "train.batch_size=2", "train.accumulate_to=4",
        "eval.batch_size=4", "eval.every=8")


def _tiny_cfg(*overrides):
    return load_config(None, [*TINY, *overrides])


def _layers_config(path: Path, layers: int) -> Path:
    """A config.json of a tiny Llama with `layers` layers (the bundled tokenizer's vocabulary) in `path`."""
    from cot_transplant.models import load_tokenizer

    tiny_config("tiny-llama", len(load_tokenizer("smollm2")), num_hidden_layers=layers).save_pretrained(path)
    return path / "config.json"


@pytest.fixture(scope="module")
def four_layers(tmp_path_factory):
    return _layers_config(tmp_path_factory.mktemp("tiny4"), 4)


@pytest.fixture(scope="module")
def tiny_yaml(tmp_path_factory):
    """`TINY` as a YAML file."""
    path = tmp_path_factory.mktemp("plan") / "tiny.yaml"
    path.write_text("model: {name: tiny-llama, dtype: bf16}\nprompt: {template: chat}\n"
                    "data: {synthetic: {n: 40, short: true}}\nlora: {r: 4, alpha: 8}\n"
                    "train: {batch_size: 2, accumulate_to: 4}\neval: {batch_size: 4, every: 8}\n")
    assert load_config(path) == _tiny_cfg()
    return path


# --- counts and bytes by hand ---------------------------------------------------------------------------


def test_a_tiny_models_parameters_and_bytes_by_hand():
    base = build_meta_base(tiny_config("tiny-llama", 100), torch.bfloat16, "eager", checkpointing=False)
    shape = base_shape(base)
    # hidden 32, 4 heads of 8 (q 32 wide), 2 kv heads (k, v 16 wide), MLP 64, vocab 100, 2 layers, tied head.
    per_layer_linear = 32 * 32 + 32 * 16 + 32 * 16 + 32 * 32 + 3 * 32 * 64  # q, k, v, o, gate/up/down = 9,216
    assert shape.linear == 2 * per_layer_linear
    assert shape.params == 100 * 32 + 2 * (per_layer_linear + 2 * 32) + 32 == 21_792  # embedding once, norms
    assert shape.linear_rows == 2 * (32 + 16 + 16 + 32 + 64 + 64 + 32)
    assert shape.linear_blocks == 2 * (16 + 8 + 8 + 16 + 32 + 32 + 32)
    assert base_bytes(shape, "bf16", 2) == 2 * 21_792 and base_bytes(shape, "fp32", 2) == 4 * 21_792
    rest = 21_792 - 18_432  # embedding and norms stay in the model's dtype
    assert base_bytes(shape, "8-bit", 2) == 18_432 + 4 * 512 + 2 * rest == 27_200
    assert base_bytes(shape, "4-bit", 2) == 18_432 // 2 + 4 * 288 + 2 * rest == 17_088
    assert base_bytes(shape, "4-bit", 2) < base_bytes(shape, "8-bit", 2) < base_bytes(shape, "bf16", 2)


@pytest.mark.parametrize("variant, trainable", [("joint", 2), ("frozen-arguer", 1), ("shared", 1)])
def test_adapters_their_gradients_and_adamw_by_hand(variant, trainable):
    cfg = _tiny_cfg(f"variant={variant}")
    model = attach_meta_adapters([build_meta_base(tiny_config("tiny-llama", 100), torch.bfloat16, "eager", False)],
                                 cfg)
    assert {p.device.type for p in model.parameters()} == {"meta"}  # peft's second adapter too
    figures = adapter_figures(model, variant)
    # r=4 on q (32->32), k (32->16), v (32->16), o (32->32): 4 * (64 + 48 + 48 + 64) = 896 per layer, 2 layers.
    assert all(a["params"] == 1_792 and a["bytes"] == 4 * 1_792 and a["dtype"] == "float32"
               for a in figures["adapters"].values())
    assert figures["trainable_params"] == trainable * 1_792
    assert figures["grad_bytes"] == 4 * trainable * 1_792
    assert figures["adamw_bytes"] == 8 * figures["trainable_params"]  # two fp32 states per trainable parameter


# --- the trace ------------------------------------------------------------------------------------------


def test_the_meter_counts_what_is_alive_by_hand():
    weight = torch.zeros(8, 16, device=META, requires_grad=True)  # 512 bytes, there before: not counted

    def forward():
        x = torch.ones(4, 8, device=META)  # 128 bytes, kept: the product saves it for the weight's gradient
        h = x @ weight  # 256 bytes, freed when this function returns (ReLU keeps its output, not its input)
        return h.relu().sum()  # 256 bytes kept; the sum: 4

    with StepMeter({weight.untyped_storage()._cdata}, META) as meter:
        loss = forward()
        assert (meter.now, meter.peak) == (128 + 256 + 4, 128 + 256 + 256 + 4)
        weight.t()  # a view of a parameter creates nothing
        torch.ones(3, device="cpu")  # another device's bytes are not the device's
        assert meter.now == 128 + 256 + 4
        loss.backward()
    assert meter.at_backward == 128 + 256 + 4 + 4  # and the backward's seed gradient (ones like the loss)
    assert meter.now == 4 + 512  # the loss and the weight's gradient; the saved tensors are freed
    assert meter.flops == 2 * (2 * 4 * 8 * 16)  # the product, then the weight's gradient x^T g (x takes none)


def _planner(*overrides, model_config=None):
    cfg = _tiny_cfg(*overrides)
    return planning.build(cfg, planning.PlanOptions("tiny.yaml", overrides, model_config))[0]


@pytest.mark.parametrize("path, checkpointing", [(steps.FAST, False), (steps.REFERENCE, True)])
def test_the_meta_traces_memory_and_flops_equal_a_real_cpu_steps(path, checkpointing):
    """The same step on real CPU tensors creates the same bytes at the same moments as on meta (eager attention,
    no dropout: no kernel stands in, no random draws differ), so the trace measures what a device would hold.

    Only the host's own tensors differ: on the CPU the host is the device, so its index plans and span checks
    count there, while the meta run counts the plans and the batch moved to the device (20 KB here, of 8-21 MB).
    """
    overrides = ("model.attn_implementation=eager", "lora.dropout=0.0", "train.fast_path_block=0",
                 f"model.gradient_checkpointing={str(checkpointing).lower()}")
    planner = _planner(*overrides)
    cfg = planner.cfg
    batch, settings = planner.batch(True, 2), planner.settings
    meta = trace_step(planner.model, batch, settings, train=True, path=path, checkpointing=checkpointing)
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(planner.bases[0].config, dtype=torch.bfloat16, attn_implementation="eager")
    set_checkpointing(base, checkpointing)
    real = attach_adapters(base, cfg.lora, cfg.variant, cfg.seed)
    on_cpu = trace_step(real, batch, settings, train=True, path=path, checkpointing=checkpointing)
    host = sum(getattr(batch, k).numel() * getattr(batch, k).element_size() for k in batch.TENSORS)
    assert on_cpu.peak_bytes > 100 * host and on_cpu.held_bytes > 0 and on_cpu.flops > 0
    assert meta.flops == on_cpu.flops
    for what in ("peak_bytes", "held_bytes", "saved_bytes"):
        assert abs(getattr(meta, what) - getattr(on_cpu, what)) <= 2 * host, what


@pytest.mark.parametrize("variant", ["joint", "frozen-arguer", "shared", "shuffled-kv", "text-only", "adversarial"])
def test_every_variants_steps_run_on_meta(variant):
    """Every step a variant can take, trained and evaluated on the meta device: no tensor made on the host meets
    the model's, no value is read back (checkpointing and LoRA dropout on, the hardest case)."""
    planner = _planner(f"variant={variant}", "model.gradient_checkpointing=true", "lora.dropout=0.05")
    run, paths = planning.step_paths(planner, None)
    assert run.path == paths[0] and len(paths) == (1 if variant in ("text-only", "adversarial") else 2)
    for path in paths:
        assert planner.trace(path, True, True, 2).flops > planner.trace(path, False, True, 4).flops > 0


def test_checkpointing_lowers_the_activations(four_layers):
    planner = _planner(model_config=str(four_layers))
    for path in (steps.FAST, steps.REFERENCE):
        on, off = (planner.trace(path, True, ckpt, 2) for ckpt in (True, False))
        assert on.held_bytes < off.held_bytes / 2 and on.saved_bytes < off.saved_bytes
        assert on.flops > off.flops  # the recomputation
    assert planner.trace(steps.FAST, True, False, 2).flops < planner.trace(steps.REFERENCE, True, False, 2).flops


def test_checkpointing_keeps_about_a_layer_input_per_layer(tmp_path):
    """With checkpointing the step's peak grows with the layers by what each layer keeps (its input), not by
    what it computes: a recomputed layer's graph is dropped as the backward leaves it (a capture made for the
    recomputation holds nothing), and the peak grows far less than the activations do without checkpointing."""
    planners = {n: _planner(model_config=str(_layers_config(tmp_path / str(n), n))) for n in (4, 8)}
    for path in (steps.FAST, steps.REFERENCE):
        on = {n: p.trace(path, True, True, 2).peak_bytes for n, p in planners.items()}
        off = {n: p.trace(path, True, False, 2).held_bytes for n, p in planners.items()}
        assert on[8] - on[4] < 0.1 * (off[8] - off[4]), path


def test_an_evaluation_capture_keeps_the_span_tokens_not_the_layers_outputs():
    """Without gradients a capture takes each layer's span tokens at once, so the forward's peak grows by the
    states (and an index), not by every layer's whole K/V output."""
    from cot_transplant.transplant import capture_kv

    model = build_meta_base(tiny_config("tiny-llama", 100, num_hidden_layers=4), torch.float32, "eager", False)
    ids, spans = torch.zeros(2, 64, dtype=torch.long, device=META), [[(10, 14)], [(20, 24)]]
    states = 2 * 4 * 4 * 2 * 16 * 4  # rows x tokens x layers x (k, v) x width 16 x fp32
    whole = 2 * 64 * 4 * 2 * 16 * 4  # every layer's K and V at every position
    peaks = []
    for capturing in (False, True):
        with torch.no_grad(), StepMeter(set(), META) as meter:
            if capturing:
                with capture_kv(model, spans) as cap:
                    model.model(input_ids=ids)
                assert sum(t.numel() * 4 for t in cap.kv.tensors.values()) == states
            else:
                model.model(input_ids=ids)
        peaks.append(meter.peak)
    assert peaks[1] - peaks[0] < states + whole / 4


@pytest.mark.parametrize("path", [steps.FAST, steps.REFERENCE])
def test_the_trace_catches_a_tensor_made_off_the_models_device(monkeypatch, path):
    planner = _planner()
    batch, settings = planner.batch(True, 2), planner.settings
    trace_step(planner.model, batch, settings, train=True, path=path, checkpointing=False)  # passes as it is
    if path == steps.FAST:  # attention blocks left on the host instead of moved to the model
        import cot_transplant.train.steps.fast.step as fast_step

        monkeypatch.setattr(fast_step, "_blocks", lambda allowed, s, device: fast_step.attention_chunks(
            allowed, s.fast_path_block, s.fast_path_gap))
    else:  # position ids made without a device
        import cot_transplant.train.steps.reference as ref_step

        monkeypatch.setattr(ref_step, "position_ids", lambda mask: torch.arange(mask.shape[1]).expand(mask.shape))
    with pytest.raises(TraceError, match=rf"the {path} training step failed on the meta device \(RuntimeError: .*"
                                         r"device.*cpu.*\) at cot_transplant/"):
        trace_step(planner.model, batch, settings, train=True, path=path, checkpointing=False)


def test_the_steps_take_a_batch_already_on_the_model_and_the_fast_path_says_what_it_needs():
    """A batch moved to the model keeps its host copy (`Batch.host`), which the fast path plans from; one
    made on the meta device without it has no values to plan from, and the fast path says so."""
    planner = _planner()
    batch = planner.batch(True, 2)
    moved = batch.to("meta")
    assert moved.host is batch
    without_host = dataclasses.replace(moved, host=None)
    reference, fast = steps.Choice(steps.REFERENCE, "test"), steps.Choice(steps.FAST, "test")
    with gpu_kernels():
        steps.forward_backward(planner.model, without_host, planner.settings, reference, 1.0)
        steps.forward_backward(planner.model, moved, planner.settings, fast, 1.0)
        with pytest.raises(ValueError, match="meta batch"):
            steps.forward_backward(planner.model, without_host, planner.settings, fast, 1.0)


# --- the command ----------------------------------------------------------------------------------------


def test_the_json_holds_the_printed_figures(tmp_path, tiny_yaml, capsys):
    out = tmp_path / "plan.json"
    assert main(["plan", str(tiny_yaml), "train.batch_size=1", "--json", str(out), "--tflops", "50"]) == 0
    text = capsys.readouterr().out
    saved = json.loads(out.read_text())
    again = planning.plan(planning.PlanOptions(str(tiny_yaml), ("train.batch_size=1",), None, 50.0))
    drop = lambda p: {**p, "memory_bytes": {**p["memory_bytes"], "activations": {  # noqa: E731
        k: [{**t, "seconds": None} for t in v] for k, v in p["memory_bytes"]["activations"].items()}}}
    assert drop(saved) == drop(json.loads(json.dumps(again)))
    assert saved["overrides"] == ["train.batch_size=1"] and saved["flops"]["tflops"] == 50.0
    assert f"{saved['memory_bytes']['total_config'] / 2 ** 30:.2f}" in text
    assert f"{saved['parameters']['base']:,}" in text
    assert saved["step"]["path"] == steps.FAST and saved["step"]["traced"] == [steps.FAST, steps.REFERENCE]
    assert all(v["fits"] for v in saved["verdict"])


@pytest.mark.parametrize("argv, message", [
    (["plan", "missing.yaml"], "config file not found"),
    (["plan", "{tiny}", "trian.batch_size=1"], "unknown config key 'trian'"),
    (["plan", "{tiny}", "--model-config", "nowhere"], "no config.json"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, tiny_yaml, argv, message):
    assert main([a.format(tiny=tiny_yaml) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


@pytest.fixture(scope="module")
def llama_7b_bf16():
    """The original config on LLaMA-7B's shape with a bf16 base and no checkpointing (fewer and smaller batches
    than the original's, for time: the meta trace's cost is per op, and the fast path's attention blocks are many)."""
    if not LLAMA_7B.is_file():
        pytest.skip(f"{LLAMA_7B} not found: the shared directory lives beside the repository")
    overrides = ("data.split=random", "data.max_rows=48", "eval.batch_size=2", "model.load_in_8bit=false",
                 "model.gradient_checkpointing=false")
    return planning.plan(planning.PlanOptions(str(ORIGINAL), overrides, str(LLAMA_7B)))


def test_7b_verdict_names_the_setting_that_fits(llama_7b_bf16):
    p = llama_7b_bf16
    assert p["parameters"]["base"] == 6_738_415_616  # LLaMA-7B
    assert p["memory_bytes"]["base"]["bf16"] == 2 * 6_738_415_616
    assert p["memory_bytes"]["base"]["8-bit"] < p["memory_bytes"]["base"]["bf16"] / 1.9
    by_gpu = {v["gpu_gib"]: v for v in p["verdict"]}
    assert not by_gpu[24]["fits"] and by_gpu[24]["change"] == "model.gradient_checkpointing=true"
    assert by_gpu[24]["change_fits"] and by_gpu[24]["needs_after_change"] <= 24 * 2 ** 30
    assert by_gpu[48]["fits"] and by_gpu[80]["fits"]


def test_7b_as_configured_fits_24_gib_by_its_own_figures(llama_7b_bf16):
    """The configured setting (8-bit base, checkpointing) from the same traces, summed here by hand."""
    m = llama_7b_bf16["memory_bytes"]
    fast = {(t["train"], t["checkpointing"]): t for t in m["activations"][steps.FAST]}
    weights = m["base"]["8-bit"] + sum(m["adapters"].values()) + m["adapter_grads"] + m["adamw_states"]
    peak = max(fast[(True, True)]["peak_bytes"], fast[(False, False)]["peak_bytes"])
    assert weights + peak + m["reserve"] < 24 * 2 ** 30 < m["base"]["bf16"] + fast[(True, False)]["peak_bytes"]
    assert m["adamw_states"] == 8 * llama_7b_bf16["parameters"]["trainable"] == 8 * 2 * 32 * 4 * 16 * 8192


def test_evals_per_epoch_counts_the_eval_at_points_within_the_epoch():
    from cot_transplant.bench.plan import evals_per_epoch
    from cot_transplant.config import load_config
    assert evals_per_epoch(load_config(None, ["eval.every=128"]), 1000) == 7
    assert evals_per_epoch(load_config(None, ["eval.at=[64,160,320,640,1600]"]), 1000) == 4
