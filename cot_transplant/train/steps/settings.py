"""What a training step reads from the config: built by keyword from it in one place (`step_settings`), frozen.

Settings hold no state: the arguer state cache belongs to the session (`train/setup.py`), the step chosen
for a run to `choice.choose`. The fields carry the config's own names and have no defaults of their own.
"""

from __future__ import annotations

from dataclasses import dataclass

from cot_transplant.config import Config
from cot_transplant.transplant import TransplantSpec


@dataclass(frozen=True, kw_only=True)
class StepSettings:
    variant: str  # variant
    choice_ids: tuple[int, int]  # token ids of "1" and "2" (from the tokenizer and template)
    spec: TransplantSpec  # transplant.site, transplant.layers
    mode: str  # transplant.mode: replace (the states take the candidates' place) | append (beside them)
    choice_only: bool  # loss.choice_only: loss over the two choice logits instead of the full vocabulary
    fast_path: str  # train.fast_path: auto (`choice.choose` takes the fast path where it is exact) | off
    fast_path_block: int  # train.fast_path_block: queries per attention block on the fast path; 0: one call
    fast_path_gap: int  # train.fast_path_gap: unseen keys up to which a block's key ranges merge

    @property
    def transplants(self) -> bool:
        return self.variant != "text-only"


def transplant_spec(cfg: Config) -> TransplantSpec:
    """Where `cfg` transplants (`transplant.site`, `transplant.layers`): the spec saved with its run and checkpoints."""
    layers = cfg.transplant.layers
    return TransplantSpec(site=cfg.transplant.site, layers=tuple(layers) if layers is not None else None)


def step_settings(cfg: Config, choice_ids: tuple[int, int]) -> StepSettings:
    """The step settings of `cfg`; `choice_ids`: the token ids of "1" and "2" under its tokenizer and template."""
    return StepSettings(variant=cfg.variant, choice_ids=tuple(choice_ids), spec=transplant_spec(cfg),
                        mode=cfg.transplant.mode, choice_only=cfg.loss.choice_only, fast_path=cfg.train.fast_path,
                        fast_path_block=cfg.train.fast_path_block, fast_path_gap=cfg.train.fast_path_gap)
