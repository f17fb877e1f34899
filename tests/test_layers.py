"""The layers of README's pipeline import only the layers above them (no arrow runs back up)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cot_transplant"
# README's order; modules at the package's top level (config, errors, models, provenance) sit above them all.
LAYERS = ["data", "generate", "prompts", "transplant", "runs", "train", "analysis", "commands"]


def _imported_layers(path: Path) -> set[str]:
    """The package's subpackages `path` imports from (at any depth: a lazy import counts too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        for name in names:
            parts = name.split(".")
            if parts[0] == "cot_transplant" and len(parts) > 1 and (PACKAGE / parts[1]).is_dir():
                found.add(parts[1])
    return found


def test_each_layer_imports_only_layers_above_it():
    wrong = []
    for layer in [*LAYERS, "bench"]:
        # bench/ measures train/'s steps: it sits beside analysis/, and only the CLI imports it.
        rank = LAYERS.index(layer) if layer in LAYERS else LAYERS.index("analysis")
        for path in sorted((PACKAGE / layer).rglob("*.py")):
            for other in _imported_layers(path) - {layer}:
                if other == "bench" and layer != "commands":
                    wrong.append(f"{path.relative_to(PACKAGE)} imports bench")
                elif other in LAYERS and LAYERS.index(other) > rank:
                    wrong.append(f"{path.relative_to(PACKAGE)} imports {other}")
    assert not wrong, wrong


def test_every_subpackage_has_a_place():
    subpackages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and any(p.glob("*.py"))}
    assert subpackages <= {*LAYERS, "bench", "configs"}, subpackages - {*LAYERS, "bench", "configs"}
