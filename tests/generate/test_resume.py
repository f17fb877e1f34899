"""Resuming: a stopped, torn or killed run ends with exactly the rows of an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import FAST, FakeOpenAI, gen, question, read_csv, summary, write_questions

SCRIPTS = ["", "[incorrect:right]", "", "[correct:500]", "", "[choice:pickwrong]", "", "[correct:garbage]"]


def questions(tmp_path, n=15, scripts=SCRIPTS):
    return write_questions(tmp_path / "q.jsonl", [question(i, 11 * i + 2, scripts[i % len(scripts)]) for i in range(n)])


def run(srv, q, out, *extra):
    return gen("--questions", str(q), "--out", str(out), "--backend", "openai", "--model", "m",
               "--base-url", srv.url, "--concurrency", "3", *FAST, *extra)


def counters(out):
    return {k: v for k, v in summary(out).items() if k not in ("run", "sessions")}


def journal_lines(out):
    return out.with_name(out.name + ".journal.jsonl").read_bytes().splitlines(keepends=True)


@pytest.fixture
def reference(tmp_path):
    """An uninterrupted run's output bytes and counters."""
    q = questions(tmp_path)
    ref = tmp_path / "ref.csv"
    with FakeOpenAI() as srv:
        assert run(srv, q, ref) == 0
    return q, ref.read_bytes(), counters(ref)


def test_stop_and_continue_equals_uninterrupted(tmp_path, reference):
    q, ref_bytes, ref_counts = reference
    out = tmp_path / "out.csv"
    with FakeOpenAI() as srv:
        assert run(srv, q, out, "--limit", "5") == 0
        assert len(read_csv(out)) < len(ref_bytes.splitlines()) - 1
        assert run(srv, q, out) == 0
    assert out.read_bytes() == ref_bytes
    assert counters(out) == ref_counts  # cumulative across the two sessions
    assert len(srv.log) == ref_counts["requests"]  # nothing done twice
    assert summary(out)["sessions"] == 2
    with FakeOpenAI() as srv:
        assert run(srv, q, out) == 0  # nothing left to do
    assert srv.log == [] and out.read_bytes() == ref_bytes


def test_row_without_journal_line_is_redone_once(tmp_path, reference):
    q, ref_bytes, ref_counts = reference
    out = tmp_path / "out.csv"
    with FakeOpenAI() as srv:
        assert run(srv, q, out) == 0
    lines = journal_lines(out)
    assert json.loads(lines[-1])["outcome"] == "accepted"
    # A crash after the last row's fsync but before its journal line; plus a torn journal line.
    out.with_name(out.name + ".journal.jsonl").write_bytes(b"".join(lines[:-1]) + lines[-1][:25])
    with FakeOpenAI() as srv:
        assert run(srv, q, out) == 0
        assert {e["item"] for e in srv.log} == {14}
    assert out.read_bytes() == ref_bytes
    assert counters(out) == ref_counts


def test_torn_row_is_cut_back(tmp_path, reference):
    q, ref_bytes, _ = reference
    out = tmp_path / "out.csv"
    with FakeOpenAI() as srv:
        assert run(srv, q, out, "--limit", "6") == 0
        with open(out, "ab") as f:
            f.write(b'"Item 6: how many apples are left? gold 68",68.0,First st')  # a crash mid-write
        assert run(srv, q, out) == 0
    assert out.read_bytes() == ref_bytes


def test_changed_settings_or_questions_refused(tmp_path, reference, capsys):
    q, _, _ = reference
    out = tmp_path / "out.csv"
    with FakeOpenAI() as srv:
        assert run(srv, q, out, "--limit", "3") == 0
        before = out.read_bytes()
        assert run(srv, q, out, "--temperature", "0.7") == 2
        assert "different settings" in capsys.readouterr().err
        # Same file name, so the same positional ids, but the questions moved.
        write_questions(q, [question(i, 11 * i + 2) for i in (1, 0, 2, 3)])
        assert run(srv, q, out) == 2
        assert "different question" in capsys.readouterr().err
        assert out.read_bytes() == before
        assert run(srv, q, out, "--overwrite") == 0
    assert len(read_csv(out)) == 4 and summary(out)["sessions"] == 1


def test_foreign_output_refused(tmp_path, capsys):
    q = questions(tmp_path, 2)
    out = tmp_path / "out.csv"
    out.write_text("a,b\n1,2\n")
    with FakeOpenAI() as srv:
        assert run(srv, q, out) == 2
    assert "has no journal" in capsys.readouterr().err and out.read_text() == "a,b\n1,2\n"


def test_sigkill_mid_run_then_restart(tmp_path):
    """A real crash: SIGKILL the CLI while requests are in flight, twice, then finish."""
    # No transient faults here: the server counts attempts over its life, so a retried
    # request cut short by the kill would be scripted differently the second time.
    q = questions(tmp_path, scripts=[s for s in SCRIPTS if "500" not in s])
    ref, out = tmp_path / "ref.csv", tmp_path / "out.csv"
    with FakeOpenAI() as srv:
        assert run(srv, q, ref) == 0
    ref_bytes, ref_counts = ref.read_bytes(), counters(ref)
    journal = out.with_name(out.name + ".journal.jsonl")
    cmd = [sys.executable, "-m", "cot_transplant", "generate", "--questions", str(q), "--out", str(out),
           "--backend", "openai", "--model", "m", "--concurrency", "3", *FAST]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with FakeOpenAI(delay=0.05) as srv:
        for kill_after in (3, 9):
            proc = subprocess.Popen(cmd + ["--base-url", srv.url], env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and proc.poll() is None:
                done = sum(1 for l in journal.read_bytes().splitlines() if b'"i"' in l) if journal.exists() else 0
                if done >= kill_after:
                    break
                time.sleep(0.01)
            assert proc.poll() is None, proc.stderr.read().decode()
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            proc.stderr.close()
        done = sum(1 for l in journal.read_bytes().splitlines() if b'"i"' in l)
        assert 9 <= done < 15
        finish = subprocess.run(cmd + ["--base-url", srv.url], env=env, capture_output=True, timeout=60)
        assert finish.returncode == 0, finish.stderr.decode()
    assert out.read_bytes() == ref_bytes
    assert out.read_bytes().count(b"Question,Correct Answer") == 1
    assert counters(out) == ref_counts
    assert summary(out)["sessions"] == 3


def test_journal_torn_in_its_header_starts_fresh(tmp_path, reference):
    q, ref_bytes, ref_counts = reference
    out = tmp_path / "out.csv"
    out.with_name(out.name + ".journal.jsonl").write_bytes(b'{"columns": ["Quest')  # killed while starting
    with FakeOpenAI() as srv:
        assert run(srv, q, out) == 0
    assert out.read_bytes() == ref_bytes and counters(out) == ref_counts
