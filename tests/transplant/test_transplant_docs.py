"""The examples in docs/transplant.md run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "transplant.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.mark.parametrize("code", [
    pytest.param(block, id=f"block{i}", marks=[pytest.mark.bundled] if "load_tokenizer" in block else [])
    for i, block in enumerate(BLOCKS)])
def test_doc_example_runs(code):
    exec(compile(code, str(DOC), "exec"), {"__name__": "doc_example"})


def test_doc_has_both_examples():
    assert len(BLOCKS) == 2
