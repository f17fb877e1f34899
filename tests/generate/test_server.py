"""`generate --backend openai` against a scripted OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import pytest
from conftest import FAST, FakeOpenAI, gen, question, read_csv, summary, write_questions

from cot_transplant.generate.pipeline import OUTCOMES, item_rng

# (script, expected outcome); counters below are worked out by hand from the scripts.
SCRIPTED = [
    ("", "accepted"),                                          # 3 requests
    ("[correct:429,500,html,502html,trunc]", "accepted"),      # 5 faults then ok: 8 requests, 5 retries
    ("[correct:stall]", "accepted"),                           # a timeout, then ok: 4 requests
    ("[correct:wrong]", "correct_stage_wrong"),                # 1 request
    ("[incorrect:right]", "incorrect_stage_right"),            # 2
    ("[correct:garbage]", "bad_format_correct"),               # 1
    ("[incorrect:garbage]", "bad_format_incorrect"),           # 2
    ("[choice:garbage]", "bad_format_choice"),                 # 3
    ("[choice:500,500,500,500,500,500]", "failed_requests"),   # 2 + 6 attempts, 5 retries
    ("[choice:pickwrong]", "accepted"),                        # 3
    ("[correct:400]", "failed_requests"),                      # 1, rejected without retry
]
EXPECTED = {
    "questions": 11, "accepted": 4, "choice_picked_correct": 3, "requests": 36, "retries": 11,
    "rate_limited": 1, "server_errors": 8, "bad_replies": 2, "timeouts": 1, "connection_errors": 0,
    "rejected": 1, "failed_requests": 2, "bad_format": 3, "bad_format_correct": 1, "bad_format_incorrect": 1,
    "bad_format_choice": 1, "correct_stage_wrong": 1, "incorrect_stage_right": 1, "bad_gold": 0, "sessions": 1,
}


def golds(n):
    return [1000 * i + 7 for i in range(n)]  # 1007 is written "$1,007" by the server


def scripted_questions(tmp_path):
    return write_questions(tmp_path / "q.jsonl",
                           [question(i, g, s) for i, ((s, _), g) in enumerate(zip(SCRIPTED, golds(len(SCRIPTED))))])


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_faults_counted_exactly(tmp_path, endpoint):
    q = scripted_questions(tmp_path)
    out = tmp_path / "out.csv"
    with FakeOpenAI(stall=1.0) as srv:
        rc = gen("--questions", str(q), "--out", str(out), "--backend", "openai", "--model", "m",
                 "--base-url", srv.url, "--endpoint", endpoint, "--timeout", "0.3", "--max-retries", "5",
                 "--concurrency", "4", *FAST)
    assert rc == 0
    s = summary(out)
    assert {k: s[k] for k in EXPECTED} == EXPECTED
    assert all(isinstance(v, int) for k, v in s.items() if k != "run")
    assert sum(s[o] for o in OUTCOMES) == s["questions"]  # one outcome per question
    assert all(e["chat"] == (endpoint == "chat") for e in srv.log)
    rows = read_csv(out)
    accepted = [i for i, (_, outcome) in enumerate(SCRIPTED) if outcome == "accepted"]
    assert [r["id"] for r in rows] == [f"q-{i}" for i in accepted]
    for i, row in zip(accepted, rows):
        gold = golds(len(SCRIPTED))[i]
        swapped = item_rng(0, f"q-{i}").random() < 0.5
        assert row["Correct Answer"] == f"{gold}.0" and row["Incorrect Answer"] == f"{gold + 1}.0"
        assert row["Correct Argument"] == f"First step.\\nSo the total is {gold}."  # newline escaped
        assert row["Choice Answers Swapped"] == str(swapped)
        picked_correct = (row["Choice Answer"] == "candidate_1") != swapped
        assert picked_correct == (i != 9)
        assert row["gen_backend"] == "openai" and row["gen_model"] == "m" and len(row["gen_prompt_sha"]) == 16
        assert f'"endpoint":"{endpoint}"' in row["gen_settings"] and '"temperature":0.0' in row["gen_settings"]
    # The first request of a question of each stage carries the settings.
    body = srv.bodies[0]
    assert body["temperature"] == 0.0 and body["max_tokens"] == 512 and body["model"] == "m"


def test_retry_after_is_honoured(tmp_path):
    q = write_questions(tmp_path / "q.jsonl", [question(0, 5, "[correct:429]")])
    with FakeOpenAI(retry_after="1") as srv:
        assert gen("--questions", str(q), "--out", str(tmp_path / "o.csv"), "--backend", "openai", "--model", "m",
                   "--base-url", srv.url, *FAST) == 0
    first, second = srv.actions("correct")
    assert first["action"] == "429" and second["t"] - first["t"] >= 0.95  # backoff alone would be ~1 ms


def test_rows_in_question_order_despite_a_slow_first_question(tmp_path):
    rows = [question(0, 3, "[delay:0.25]")] + [question(i, i + 3) for i in range(1, 8)]
    q = write_questions(tmp_path / "q.jsonl", rows)
    out = tmp_path / "o.csv"
    with FakeOpenAI() as srv:
        assert gen("--questions", str(q), "--out", str(out), "--backend", "openai", "--model", "m",
                   "--base-url", srv.url, "--concurrency", "4", *FAST) == 0
    finished_early = [e["item"] for e in srv.log if e["stage"] == "choice"]
    assert finished_early[0] != 0  # later questions did finish first ...
    assert [r["id"] for r in read_csv(out)] == [f"q-{i}" for i in range(8)]  # ... and were written after it


def test_rps_limits_request_starts(tmp_path):
    q = write_questions(tmp_path / "q.jsonl", [question(i, i + 3) for i in range(4)])  # 12 requests
    with FakeOpenAI() as srv:
        assert gen("--questions", str(q), "--out", str(tmp_path / "o.csv"), "--backend", "openai", "--model", "m",
                   "--base-url", srv.url, "--concurrency", "4", "--rps", "40", *FAST) == 0
    times = sorted(e["t"] for e in srv.log)
    assert len(times) == 12 and times[-1] - times[0] >= 0.9 * 11 / 40


def test_api_key_used_and_never_written(tmp_path, monkeypatch, capsys):
    secret = "sk-test-DO-NOT-LEAK-8c1f0e"
    monkeypatch.setenv("MY_TEST_KEY", secret)
    q = write_questions(tmp_path / "q.jsonl", [question(i, i + 3) for i in range(3)] + [question(3, 9, "[correct:500]")])
    out = tmp_path / "o.csv"
    with FakeOpenAI(api_key=secret) as srv:
        assert gen("--questions", str(q), "--out", str(out), "--backend", "openai", "--model", "m",
                   "--base-url", srv.url, "--api-key-env", "MY_TEST_KEY", *FAST) == 0
    assert summary(out)["accepted"] == 4
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) >= 4  # questions, output, journal, summary
    for p in files:
        assert secret not in p.read_text(errors="replace"), p
    captured = capsys.readouterr()
    assert secret not in captured.out + captured.err


def test_missing_or_refused_key_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MY_TEST_KEY", raising=False)
    q = write_questions(tmp_path / "q.jsonl", [question(0, 3)])
    with FakeOpenAI(api_key="sk-right") as srv:
        args = ["--questions", str(q), "--backend", "openai", "--model", "m", "--base-url", srv.url,
                "--api-key-env", "MY_TEST_KEY", *FAST]
        assert gen(*args, "--out", str(tmp_path / "a.csv")) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "needs an API key" in err and "MY_TEST_KEY" in err
        monkeypatch.setenv("MY_TEST_KEY", "sk-wrong")
        assert gen(*args, "--out", str(tmp_path / "b.csv")) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "was refused" in err and "sk-wrong" not in err
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert gen("--questions", str(q), "--out", str(tmp_path / "c.csv"), "--backend", "openai", "--model", "m") == 2
    assert "OPENAI_API_KEY" in capsys.readouterr().err
