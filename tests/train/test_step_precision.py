"""The step compares the choice probabilities in float32, never in a bf16 model's own dtype."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cot_transplant.runs.metrics import row_scores


def test_choice_probabilities_are_compared_in_float32_not_bf16():
    torch = pytest.importorskip("torch")
    from cot_transplant.train.steps import StepSettings, loss_and_probs
    from cot_transplant.train.steps.reference import last_logits
    from cot_transplant.transplant import TransplantSpec

    logits = torch.zeros(1, 5)
    logits[0, 1], logits[0, 2] = 10.0, 10.02  # bf16 steps by 0.0625 near 10: both round to 10.0
    assert logits.bfloat16()[0, 1] == logits.bfloat16()[0, 2]
    s = StepSettings(variant="joint", choice_ids=(1, 2), spec=TransplantSpec(), mode="replace", choice_only=False, fast_path="off",
                     fast_path_block=0, fast_path_gap=0)
    _, p1, p2 = loss_and_probs(logits, torch.tensor([2]), s)
    assert p1.dtype == torch.float32 and p2 > p1
    assert row_scores(p1.tolist(), p2.tolist(), [2]).tolist() == [1.0]  # preferred, not a tie
    # a bf16 model's logits leave `last_logits` as float32, before any softmax or comparison
    model = lambda **kw: SimpleNamespace(logits=torch.ones(1, 3, 5, dtype=torch.bfloat16))  # noqa: E731
    assert last_logits(model, torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.long)).dtype \
        == torch.float32
