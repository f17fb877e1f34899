"""Where a transplant happens, as data: a frozen spec saved with every run."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

# Which per-layer tensors each site moves: "k"/"v" are the k_proj/v_proj outputs, "residual" the decoder layer output.
SITE_KEYS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "kv": ("k", "v"),
    "k": ("k",),
    "v": ("v",),
    "residual": ("residual",),
})


@dataclass(frozen=True)
class TransplantSpec:
    """What to transplant: `site` ("kv", "k", "v" or "residual") in `layers` (None: every layer).

    `layers` is stored sorted and without repeats, so equal specs compare equal.

    Raises:
        ValueError: unknown site, empty, negative, repeated or non-integer layers.
    """

    site: str = "kv"
    layers: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.site not in SITE_KEYS:
            raise ValueError(f"TransplantSpec.site: '{self.site}' is not one of {tuple(SITE_KEYS)}")
        if self.layers is None:
            return
        layers = tuple(self.layers)
        if not layers:
            raise ValueError("TransplantSpec.layers: empty; give None for every layer")
        bad = [x for x in layers if not isinstance(x, int) or isinstance(x, bool) or x < 0]
        if bad:
            raise ValueError(f"TransplantSpec.layers: {bad} are not layer indices (non-negative integers)")
        if len(set(layers)) != len(layers):
            raise ValueError(f"TransplantSpec.layers: {list(layers)} repeats a layer")
        object.__setattr__(self, "layers", tuple(sorted(layers)))

    @property
    def keys(self) -> tuple[str, ...]:
        """The per-layer tensors this site moves, e.g. ("k", "v")."""
        return SITE_KEYS[self.site]

    def to_dict(self) -> dict[str, Any]:
        """A YAML/JSON-ready dict; `from_dict` reads it back."""
        return {"site": self.site, "layers": None if self.layers is None else list(self.layers)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TransplantSpec":
        """Build a spec from `to_dict` output. Raises ValueError on unknown keys."""
        unknown = sorted(set(data) - {"site", "layers"})
        if unknown:
            raise ValueError(f"TransplantSpec: unknown keys {unknown}; known: ['layers', 'site']")
        layers = data.get("layers")
        return cls(site=data.get("site", "kv"), layers=None if layers is None else tuple(layers))
