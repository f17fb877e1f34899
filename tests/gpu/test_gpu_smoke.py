"""GPU smoke test (`scripts/gpu-smoke.sh`): what a user with a CUDA machine runs first, in minutes.

Tiny Llama and the bundled SmolLM2 in fp32, bf16, 8-bit and 4-bit: the model on the device, one
training step and one evaluation; the fast path equal to the reference step; a stopped run resumed
to the metrics of an uninterrupted one; with two GPUs, two processes ending with one's adapters.

The device is `$COT_TRANSPLANT_SMOKE_DEVICE` (default cuda). `cpu` runs the same tests (fp32 and
bf16; 8-bit and 4-bit skip) so their logic is checked without a GPU. With the default device and
no CUDA, tests/conftest.py skips every test here with one line.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from cot_transplant.config import load_config
from cot_transplant.runs import rundir
from cot_transplant.train import steps
from cot_transplant.train.steps import fast, reference
from cot_transplant.train.adapters import adapter_params, trainable
from cot_transplant.train.distributed import Dist
from cot_transplant.train.evaluate import evaluate
from cot_transplant.train.loop import make_optimizer, train, train_step
from cot_transplant.train.setup import setup
from smoke import smoke_device
from test_distributed import TINY as DIST_TINY
from test_distributed import adapters
from step_helpers import _batch, _run
from test_resume_extend import stable

pytestmark = pytest.mark.gpu

DEVICE = torch.device(smoke_device())
MODELS = ("tiny-llama", "smollm2")
QUANTIZED = ("8bit", "4bit")
PRECISIONS = {  # compute in bf16 under the quantized bases, as the GPU configs do
    "fp32": ("model.dtype=fp32",),
    "bf16": ("model.dtype=bf16",),
    "8bit": ("model.dtype=bf16", "model.load_in_8bit=true"),
    "4bit": ("model.dtype=bf16", "model.load_in_4bit=true"),
}


# How far the fast path may lie from the reference step. fp32: the two sum the same products in another
# order (blocks, packed rows), a few roundings of 2^-24 per value, which SmolLM2's 30 layers grow to ~1e-5
# in log P and ~1e-4 in a small gradient tensor. The quantized bases compute in bf16, whose rounding alone
# moves SmolLM2's log P and gradients by O(0.1-0.25) (the bf16 case measures it), and LLM.int8 picks its
# outlier columns per batch; a bitsandbytes layer has no fp32 copy to measure against, so a fixed twice
# that: it catches a step that reads quantized weights as plain ones or loses an adapter, not a subtle shift.
FIXED = {"fp32": {"forward": 1e-4, "grad": 1e-3}, "8bit": {"forward": 0.5, "grad": 0.5},
         "4bit": {"forward": 0.5, "grad": 0.5}}
# bf16 is measured: each step against the reference in fp32 on the same (bf16-valued) weights. The fast
# path must come within 3x the reference's own error of it, plus a floor for where both are ~0 (tiny models).
BF16_FACTOR, BF16_FLOOR = 3.0, {"forward": 1e-3, "grad": 1e-2}


def needs(precision: str) -> None:
    """Skip, with the reason, a precision this machine cannot run."""
    if precision in QUANTIZED and DEVICE.type != "cuda":
        pytest.skip(f"{precision}: bitsandbytes quantization needs CUDA (smoke device is {DEVICE.type})")
    if precision in QUANTIZED and importlib.util.find_spec("bitsandbytes") is None:
        pytest.skip(f"{precision}: bitsandbytes is not installed (pip install -e '.[gpu]')")


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory):
    """Tiny Llama saved with `save_pretrained` (and the bundled tokenizer): a quantized base is only ever
    loaded through `from_pretrained`, so the 8-bit and 4-bit cases load this directory."""
    from cot_transplant.models import build_tiny, load_tokenizer

    path = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = load_tokenizer("smollm2")
    build_tiny("tiny-llama", len(tokenizer), seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def model_name(model: str, precision: str, request) -> str:
    """What `model.name` is for `model` in `precision` (tiny Llama quantized: its saved directory)."""
    if model == "tiny-llama" and precision in QUANTIZED:
        return str(request.getfixturevalue("tiny_llama_dir"))
    return model


def smoke_cfg(name: str, precision: str, *overrides: str):
    """A few short synthetic rows (three solution lengths), small adapters, on the smoke device."""
    return load_config(None, [
        f"model.name={name}", f"model.device={DEVICE.type}", *PRECISIONS[precision], "prompt.template=chat",
        "data.synthetic.n=16", "data.synthetic.seed=5", "data.synthetic.steps=[2,3,4]", "data.synthetic.short=true",
        "data.val_fraction=0.25", "data.test_fraction=0.25", "lora.r=4", "lora.alpha=8", "lora.dropout=0.0",
        "train.batch_size=2", "train.accumulate_to=4", "train.max_samples=4", "train.optim.lr=1e-2",
        "eval.every=4", "eval.batch_size=4", "eval.splits=[test]", "checkpoint.every=1",
        "checkpoint.keep=1", "run.progress=false", "run.tensorboard=false", *overrides])


def assert_on_device(model, precision: str) -> None:
    """Every parameter and buffer on the smoke device, the base in `precision`, only LoRA weights trainable."""
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    elsewhere = [f"{n} ({t.device})" for n, t in tensors if t.device.type != DEVICE.type]
    assert not elsewhere, f"{len(elsewhere)} tensors not on {DEVICE.type}, e.g. {elsewhere[:3]}"
    assert all(p.requires_grad == ("lora_" in n) for n, p in model.named_parameters())
    base = model.get_base_model()
    if precision in QUANTIZED:
        quantized = [m for m in base.modules() if type(m).__module__.startswith("bitsandbytes")]
        assert quantized, f"{precision} asked for, but no bitsandbytes layer in the base"
    else:
        dtype = base.get_input_embeddings().weight.dtype
        assert dtype == {"fp32": torch.float32, "bf16": torch.bfloat16}[precision], f"{precision} base in {dtype}"


def last_q_o(model) -> set[str]:
    """Names of the LoRA weights on the last layer's q_proj and o_proj (the arguer's read nothing past its K/V)."""
    last = f"layers.{model.get_base_model().config.num_hidden_layers - 1}.self_attn."
    return {n for n, _ in model.named_parameters() if last + "q_proj.lora" in n or last + "o_proj.lora" in n}


def nonzero_lora_b(model, seed: int = 3) -> None:
    """Draw every LoRA B (zero at init) on the model's device, so each adapter changes what the other sees."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for name in ("arguer", "chooser"):
            for n, p in adapter_params(model, name):
                if "lora_B" in n:
                    p.copy_(torch.randn(p.shape, generator=generator) * 0.05)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("model", MODELS)
def test_one_step_and_one_evaluation_on_the_device(model, precision, request, tmp_path):
    needs(precision)
    session = setup(smoke_cfg(model_name(model, precision, request), precision))
    assert session.device.type == DEVICE.type
    assert_on_device(session.model, precision)
    optimizer = make_optimizer(session)
    before = {n: p.detach().clone() for a in trainable("joint") for n, p in adapter_params(session.model, a)}
    out = train_step(session, optimizer, list(range(4)), session.cfg.train.optim.lr, Dist())
    assert out["finite"] and len(out["loss"]) == 4 and all(map(math.isfinite, out["loss"]))
    moved = {n for n, p in session.model.named_parameters() if n in before and not torch.equal(p, before[n])}
    # Every B that gets a gradient moves at step one (A once B is nonzero); the arguer's last q/o get none.
    idle = {n for n in last_q_o(session.model) if ".arguer." in n}
    want = {n for n in before if "lora_B" in n and n not in idle}
    assert want <= moved, f"{len(want - moved)} LoRA B weights did not move, e.g. {sorted(want - moved)[:2]}"
    record = evaluate(session, "test", 4, tmp_path)
    assert math.isfinite(record["test/loss"]) and 0 <= record["test/f_c"] <= 1
    pred = rundir.read_predictions(tmp_path / "predictions" / "test-4.csv")
    assert sorted(pred["row_id"]) == sorted(e.row_id for e in session.examples["test"])
    assert all(0 < p1 + p2 <= 1 for p1, p2 in zip(pred["p_cand1"], pred["p_cand2"]))


def forward_errors(got, want) -> dict[str, float]:
    """Largest |difference| over rows of the loss, log P1, log P2 and log P1 - log P2 of two step results."""
    (loss_g, p1_g, p2_g), (loss_w, p1_w, p2_w) = ([t.float() for t in r[:3]] for r in (got, want))
    pairs = {"loss": (loss_g, loss_w), "log P1": (p1_g.log(), p1_w.log()), "log P2": (p2_g.log(), p2_w.log()),
             "log P1 - log P2": (p1_g.log() - p2_g.log(), p1_w.log() - p2_w.log())}
    return {k: (g - w).abs().max().item() for k, (g, w) in pairs.items()}


def grad_errors(got: dict, want: dict) -> dict[str, float]:
    """Relative (Frobenius) error of each LoRA gradient; both adapters must have them, the same tensors."""
    assert got.keys() == want.keys()
    assert all(any(f".{a}." in n for n in want) for a in trainable("joint"))
    assert all(g.norm() > 0 for g in want.values())
    return {n: ((got[n].float() - g.float()).norm() / g.float().norm()).item() for n, g in want.items()}


def errors(got, want) -> dict[str, float]:
    """`forward_errors`, and `grad_errors` where both results carry gradients (a training step's)."""
    out = forward_errors(got, want)
    if isinstance(want[3], dict):
        out |= grad_errors(got[3], want[3])
    return out


def kind(key: str) -> str:
    return "grad" if "lora_" in key else "forward"


def assert_within(errors: dict[str, float], limits: dict[str, float], what: str) -> None:
    """Every error at most its limit (a NaN fails); the message names the worst five."""
    over = sorted(((e, k) for k, e in errors.items() if not e <= limits[k]), key=lambda x: -x[0] if x[0] == x[0] else 0)
    if over:
        pytest.fail(f"{what}: {len(over)} over the limit: " + "; ".join(f"{k} {e:.2e} > {limits[k]:.2e}"
                                                                      for e, k in over[:5]))


def run_step(session, batch, path) -> dict:
    """One training step (loss, p1, p2, grads) and one eval forward (loss, p1, p2, capture) of `path`."""
    trained = _run(path.train_forward_backward, session, batch, session.settings)
    with torch.no_grad():
        return {"train": trained, "eval": path.forward(session.model, batch, session.settings)}


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("model", MODELS)
def test_fast_path_equals_reference_on_the_device(model, precision, request):
    needs(precision)
    session = setup(smoke_cfg(model_name(model, precision, request), precision))
    nonzero_lora_b(session.model)
    assert session.step.path == steps.FAST
    batch = _batch(session).to(session.device)
    ref, fast_run = run_step(session, batch, reference), run_step(session, batch, fast)
    if precision == "bf16":
        session.model.float()
        truth = run_step(session, batch, reference)
    for what in ("train", "eval"):
        if precision == "bf16":
            own = errors(ref[what], truth[what])
            limits = {k: BF16_FACTOR * e + BF16_FLOOR[kind(k)] for k, e in own.items()}
            assert_within(errors(fast_run[what], truth[what]), limits, f"{what} step against fp32")
        else:
            got = errors(fast_run[what], ref[what])
            assert_within(got, {k: FIXED[precision][kind(k)] for k in got}, f"{what} step")


def test_stopped_run_resumes_to_the_metrics_of_an_uninterrupted_one(tmp_path):
    """LoRA dropout on, so the device's random state must be saved and restored with the checkpoint.

    On CPU the metrics must be equal to the bit, as tests/train's resume tests demand; on CUDA a
    summation order that differs between two identical runs (atomic adds) is allowed 1e-5 relative,
    far below what other dropout masks do (they move the loss at the 1e-3 level and more).
    """
    flags = (f"run.dir={tmp_path}", "lora.dropout=0.1", "train.max_samples=16", "eval.every=8")
    train(smoke_cfg("tiny-llama", "fp32", *flags, "run.name=full"))
    train(smoke_cfg("tiny-llama", "fp32", *flags, "run.name=stopped", "train.max_samples=8"))
    train(smoke_cfg("tiny-llama", "fp32", *flags, "run.name=stopped"), resume=tmp_path / "stopped")
    full, resumed = stable(tmp_path / "full" / "metrics.jsonl"), stable(tmp_path / "stopped" / "metrics.jsonl")
    assert [x["samples"] for x in resumed] == [x["samples"] for x in full] and full[-1]["samples"] == 16
    if DEVICE.type == "cpu":
        assert resumed == full
    else:
        assert_records_close(resumed, full, rel=1e-5)


def assert_records_close(got: list[dict], want: list[dict], rel: float) -> None:
    """Metrics records with the same keys, numbers within `rel`, everything else equal."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.keys() == w.keys(), (g, w)
        for key, value in w.items():
            if isinstance(value, float):
                assert g[key] == pytest.approx(value, rel=rel, abs=1e-8), (w["samples"], key)
            else:
                assert g[key] == value, (w["samples"], key)


# What each of the two processes sees: its rank, the world size and the device it computes on.
PROBE = """import sys
import torch
from cot_transplant.train.distributed import Dist
d = Dist()
device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
sys.stdout.write(f"probe {d.rank} {d.world} {device}\\n")  # one write: the two processes share the pipe
sys.stdout.flush()
"""


def two_processes() -> list[str]:
    """The launcher of two processes on the smoke device: `accelerate launch` on 2 GPUs; on CPU torchrun
    (gloo), as accelerate 1.x starts several CPU processes only through mpirun (`--cpu` alone runs one)."""
    if DEVICE.type == "cpu":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    return [os.path.join(os.path.dirname(sys.executable), "accelerate"), "launch", "--multi_gpu", "--gpu_ids", "0,1",
            "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]


def launch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*two_processes(), *args], env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=600)


def errors_of(proc: subprocess.CompletedProcess) -> str:
    """The error lines of a failed launch (each process's, before the launcher's own traceback)."""
    return "\n".join(line for line in proc.stderr.splitlines() if "Error" in line)[-3000:]


def test_two_processes_end_with_the_adapters_of_one(tmp_path):
    from cot_transplant.cli import main

    if DEVICE.type == "cuda" and torch.cuda.device_count() < 2:
        pytest.skip(f"two processes need 2 GPUs; this machine has {torch.cuda.device_count()}")
    if DEVICE.type == "cuda" and shutil.which("accelerate", path=os.path.dirname(sys.executable)) is None:
        pytest.skip("accelerate launcher not installed beside this Python")
    (tmp_path / "probe.py").write_text(PROBE)
    probe = launch(str(tmp_path / "probe.py"))
    assert probe.returncode == 0, errors_of(probe)
    seen = sorted(line for line in probe.stdout.splitlines() if line.startswith("probe "))
    where = ["cpu", "cpu"] if DEVICE.type == "cpu" else ["cuda:0", "cuda:1"]
    assert seen == [f"probe 0 2 {where[0]}", f"probe 1 2 {where[1]}"], \
        f"each process must see a world of 2 on its own device: {seen or probe.stdout[-500:]} {probe.stderr[-1000:]}"
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**DIST_TINY, "model": {**DIST_TINY["model"], "device": DEVICE.type}}))
    two = launch("-m", "cot_transplant", "train", str(config), f"run.dir={tmp_path}", "run.name=two")
    assert two.returncode == 0, errors_of(two)
    assert main(["train", str(config), f"run.dir={tmp_path}", "run.name=one"]) == 0
    one, two = adapters(tmp_path / "one"), adapters(tmp_path / "two")
    assert one.keys() == two.keys() and all(one[n].keys() == two[n].keys() for n in one)
    for name in one:
        for key in one[name]:
            torch.testing.assert_close(two[name][key], one[name][key], rtol=0, atol=1e-5, msg=f"{name} {key}")
    assert max(t.abs().max().item() for a in one.values() for t in a.values()) > 1e-3  # they trained
