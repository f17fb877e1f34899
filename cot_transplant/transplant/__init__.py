"""Transplant states between decoders: capture at token spans in one forward, inject into another.

Modules: `spec` (where: site and layers, as data), `arch` (the family table and
site lookup), `spans` (span checks), `hooks` (the capture/inject context managers),
`backward` (the two-phase backward for one base with two peft adapters).
"""

from cot_transplant.transplant.arch import ARCHITECTURES, Architecture
from cot_transplant.transplant.backward import active_adapter, backward_from_states, backward_to_states
from cot_transplant.transplant.hooks import Capture, Inject, SpanStates, capture, capture_kv, inject, inject_kv
from cot_transplant.transplant.spec import SITE_KEYS, TransplantSpec

__all__ = [
    "ARCHITECTURES", "Architecture", "Capture", "Inject", "SITE_KEYS", "SpanStates", "TransplantSpec",
    "active_adapter", "backward_from_states", "backward_to_states", "capture", "capture_kv", "inject",
    "inject_kv",
]
