"""The local backend on a tiny random model: end to end through the CLI, and batching that changes nothing."""

from __future__ import annotations

import json
import threading
from collections import Counter

import pytest
from conftest import gen, read_csv, summary

from cot_transplant.generate.backends import Sampling
from cot_transplant.generate.local import LocalBackend
from cot_transplant.generate.pipeline import OUTCOMES
from cot_transplant.generate.stage_templates import load_templates


@pytest.fixture(scope="module")
def backend():
    b = LocalBackend("tiny-llama", Sampling(endpoint="completions", max_tokens=6), batch_size=4, max_wait=0.2)
    yield b
    b.close()


def test_batched_equals_one_by_one(backend):
    t = load_templates()
    requests = [t.render("correct", q) for q in ("What is 2+2?", "A much longer question about apples, pears, "
                                                 "and how many of them there are in total?", "Why?")]
    one_by_one = [backend.complete(r, Counter()) for r in requests]
    batched: list = [None] * 3
    counts = Counter()

    def call(i):
        batched[i] = backend.complete(requests[i], counts)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert batched == one_by_one and counts["requests"] == 3
    assert all(isinstance(x, str) for x in batched)


def test_stop_sequences_cut_the_reply(backend):
    r = load_templates().render("correct", "What is 2+2?")
    full = backend.complete(r, Counter())
    if len(full) < 2:
        pytest.skip("the tiny model produced too little text to cut")
    stop = full[1:3]
    cut = LocalBackend.__new__(LocalBackend)  # same model, other sampling: share the loaded parts
    cut.__dict__.update(backend.__dict__, sampling=Sampling(endpoint="completions", max_tokens=6, stop=(stop,)))
    assert cut._generate([type("P", (), {"text": r.completion_text, "chat": False})()]) == [full[: full.find(stop)]]


def test_cli_end_to_end_on_tiny_llama(tmp_path):
    out = tmp_path / "o.csv"
    assert gen("--questions", "synthetic:3", "--out", str(out), "--backend", "local", "--model", "tiny-llama",
               "--max-tokens", "8", "--concurrency", "2", "--no-progress") == 0
    s = summary(out)
    assert s["questions"] == 3 and s["sessions"] == 1
    assert sum(s[o] for o in OUTCOMES) == 3  # every question ends in exactly one outcome
    assert 3 <= s["requests"] <= 9 and s["retries"] == 0
    assert len(read_csv(out)) == s["accepted"]
    assert s["run"]["backend"] == "local" and s["run"]["model"] == "tiny-llama"
    journal = [json.loads(line) for line in out.with_name("o.csv.journal.jsonl").read_text().splitlines()]
    assert [e["id"] for e in journal if "i" in e] == ["synth-0-0", "synth-0-1", "synth-0-2"]
    header = out.read_text().splitlines()[0]
    assert header.startswith("Question,Correct Answer") and header.endswith("gen_prompt_sha,gen_settings")
