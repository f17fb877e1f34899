"""The training step: one objective and one two-phase backward (`backward.py`), run through the passes
of the reference (`reference.py`), of the exact fast path (`fast/`) or of the adversarial step
(`adversarial.py`); `choice.py` picks one per run, `settings.py` holds what they read from the config,
`devices.py` where their tensors live.

The loop calls `forward_backward` (training) and evaluation `forward`, each with the session's chosen
step (`Session.step`) and arguer state cache (`Session.arguer_cache`).
"""

from cot_transplant.train.steps.backward import SubBatchResult, loss_and_probs
from cot_transplant.train.steps.choice import (ADVERSARIAL, FAST, FAST_VARIANTS, REFERENCE, Choice, announce, choose,
                                               forward, forward_backward, path_for)
from cot_transplant.train.steps.devices import finite, host_copy, model_device, on_model
from cot_transplant.train.steps.settings import StepSettings, step_settings, transplant_spec

__all__ = ["ADVERSARIAL", "FAST", "FAST_VARIANTS", "REFERENCE", "Choice", "StepSettings", "SubBatchResult",
           "announce", "choose", "finite", "forward", "forward_backward", "host_copy", "loss_and_probs",
           "model_device", "on_model", "path_for", "step_settings", "transplant_spec"]
