"""The fast path equals the reference step in bf16 too (GPU configs train in bf16), on a CPU.

Tolerances. bf16 keeps 8 significant bits, so one rounding errs by up to 2^-9 of the value. The two
steps round at different places (the fast path packs the arguer's rows, attends in blocks, and runs
the chooser's last layer for one query), so they may differ by a few roundings per layer. Measured on
these tiny models: loss 6e-4 apart (of ~10.8), log P1 - log P2 7e-4 apart, gradients up to 1.3% of
each tensor's largest entry. Allowed: 2^-8 (about 0.004) on the loss and on log P1 - log P2, which
the loss and the log-odds reach in float32 after the bf16 body; 2^-5 (3%) of each gradient tensor's
largest entry, the room for about 16 roundings of 2^-9 between the paths. These catch a wrong
dtype, a missing or misplaced transplant and a wrongly scaled backward phase; a one-position rotary
shift moves the log-odds of these weak random models by only ~1e-3 in bf16, under bf16's own noise,
which is why the fine equality is checked in float32 (test_fast.py) and only the coarse one here.
"""

import pytest
import torch

from cot_transplant.train.steps import backward, fast, reference
from step_helpers import _batch, _run, _session

LOSS_AND_LOGODDS = 2.0 ** -8
GRADIENTS = 2.0 ** -5


def _compare(ref, fast):
    torch.testing.assert_close(fast[0], ref[0], rtol=0, atol=LOSS_AND_LOGODDS, msg="loss")
    torch.testing.assert_close(fast[1].log() - fast[2].log(), ref[1].log() - ref[2].log(), rtol=0,
                               atol=LOSS_AND_LOGODDS, msg="log P1 - log P2")


@pytest.mark.parametrize("family", ["tiny-llama", "tiny-qwen2"])
def test_fast_path_equals_reference_in_bf16(tiny_rows, family):
    session = _session(tiny_rows, f"model.name={family}", "model.dtype=bf16")
    batch = _batch(session, 3)
    assert next(session.model.get_base_model().parameters()).dtype == torch.bfloat16
    ref = _run(reference.train_forward_backward, session, batch, session.settings)
    fast_run = _run(fast.train_forward_backward, session, batch, session.settings)
    assert ref[0].dtype == fast_run[0].dtype == torch.float32  # the loss is taken in float32 in both
    _compare(ref, fast_run)
    assert ref[3].keys() == fast_run[3].keys()
    assert any(".arguer." in n for n in ref[3]) and any(".chooser." in n for n in ref[3])
    for n, g in ref[3].items():
        assert fast_run[3][n].dtype == g.dtype, n  # the adapters' own dtype (peft keeps them float32)
        torch.testing.assert_close(fast_run[3][n], g, rtol=0, atol=GRADIENTS * g.abs().max().item(), msg=n)
    with torch.no_grad():
        ref_fwd = reference.forward(session.model, batch, session.settings)
        fast_fwd = fast.forward(session.model, batch, session.settings)
    _compare(ref_fwd, fast_fwd)
    for k, t in ref_fwd[3].kv.tensors.items():
        assert t.dtype == fast_fwd[3].kv.tensors[k].dtype == torch.bfloat16  # states move in the model's dtype
        torch.testing.assert_close(fast_fwd[3].kv.tensors[k], t, rtol=0, atol=GRADIENTS * t.abs().max().item())


def test_the_bf16_tolerance_still_sees_a_wrong_backward_phase(tiny_rows, monkeypatch):
    """Planted: the arguer's phase starts from state gradients one half too small."""
    session = _session(tiny_rows, "model.dtype=bf16")
    batch = _batch(session, 3)
    ref = _run(reference.train_forward_backward, session, batch, session.settings)
    real = backward.backward_from_states

    def halved(kv, kv_grads):
        return real(kv, tuple(None if g is None else g / 2 for g in kv_grads))

    monkeypatch.setattr(backward, "backward_from_states", halved)
    fast_run = _run(fast.train_forward_backward, session, batch, session.settings)
    arguer = [n for n in ref[3] if ".arguer." in n and ref[3][n].abs().max() > 0]
    assert arguer
    with pytest.raises(AssertionError):
        for n in arguer:
            torch.testing.assert_close(fast_run[3][n], ref[3][n], rtol=0, atol=GRADIENTS * ref[3][n].abs().max().item())
