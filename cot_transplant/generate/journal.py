"""Crash-safe output: rows appended and fsynced in question order, a journal, a summary.

Three files sit together: `OUT` (the CSV), `OUT.journal.jsonl` and `OUT.summary.json`.
The journal starts with a header (what shapes the rows: backend, model, prompt hash,
settings), then one `session` line per start, then one line per processed question, in
order: its index, id, a hash of its content, outcome, counter deltas and the CSV's byte
size after its row.

For each question the row is written and fsynced *before* its journal line. A crash
between the two leaves a row the journal does not know; on restart the CSV is cut back
to the size the last journal line records and that question is done again, so no row is
duplicated or lost and the header stays single. A torn last journal line is dropped.
Counters are sums over journal lines, so the summary is cumulative across resumes and
counts each question's work once.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections import Counter
from pathlib import Path

from cot_transplant.errors import UserError

FORMAT = 1
# Fields of the journal header that must match for a resume (the rest may change between sessions).
RESUME_KEYS = ("mode", "backend", "model", "prompt_sha", "settings", "columns")


def sidecars(out: Path) -> tuple[Path, Path]:
    """(journal, summary) paths beside `out`."""
    return out.with_name(out.name + ".journal.jsonl"), out.with_name(out.name + ".summary.json")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _csv_line(values: list[str]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue().encode("utf-8")


class OutputLog:
    """The CSV, journal and summary of one `generate` output.

    Args:
        out: the CSV path.
        header: what shapes the rows (keys of RESUME_KEYS, plus anything else worth recording).
        counters: names always written to the summary (as 0 when never counted).
        overwrite: delete an existing output (and its journal and summary) first.

    After `open()`, `done` is the number of questions already processed and `totals` their counters.
    """

    def __init__(self, out: Path, header: dict, *, counters: tuple[str, ...] = (), overwrite: bool = False):
        self.out = Path(out)
        self.journal_path, self.summary_path = sidecars(self.out)
        self.header = {"kind": "header", "format": FORMAT, **header}
        self.columns: list[str] = list(header["columns"])
        self.overwrite, self.counter_names = overwrite, tuple(counters)
        self.done = 0
        self.ids: list[tuple[str, str]] = []  # (id, content hash) of each processed question
        self.totals: Counter = Counter()
        self._out = self._journal = None
        self.session: dict = {}
        self._last_summary = 0.0

    # -- opening -------------------------------------------------------------------------

    def open(self, session: dict) -> None:
        """Start fresh or resume; then record a session line. Raises UserError on an inconsistent output."""
        if self.overwrite:
            for path in (self.out, self.journal_path, self.summary_path):
                path.unlink(missing_ok=True)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        if self.journal_path.exists() and b"\n" not in self.journal_path.read_bytes():
            self.journal_path.unlink()  # a crash before the header line was complete: nothing was committed
        if self.journal_path.exists():
            out_bytes = self._read_journal()
            self._out = open(self.out, "r+b")
            self._out.truncate(out_bytes)
            self._out.seek(out_bytes)
            if out_bytes == 0:
                self._write_out(_csv_line(self.columns))
        else:
            if self.out.exists() and self.out.stat().st_size > 0:
                raise UserError(f"{self.out}: exists but has no journal ({self.journal_path.name}), so it was not "
                                "written by `generate`; pass --overwrite to replace it, or choose another --out")
            self._journal = open(self.journal_path, "wb")
            self._append_journal(self.header)
            self._out = open(self.out, "wb")
            self._write_out(_csv_line(self.columns))
            _fsync_dir(self.out.parent)
        self.totals["sessions"] += 1
        self.session = session
        self._append_journal({"kind": "session", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                              "resumed_at": self.done, **session})

    def _read_journal(self) -> int:
        """Load the journal, drop a torn last line, check it against the CSV; returns the CSV's valid size."""
        raw = self.journal_path.read_bytes()
        lines = raw.split(b"\n")[:-1]  # the part after the last newline is empty or torn by a crash
        valid = 0
        entries: list[dict] = []
        for k, line in enumerate(lines):
            try:
                entry = json.loads(line)
                if not isinstance(entry, dict):
                    raise ValueError
            except ValueError:
                if k == len(lines) - 1:
                    break  # a damaged last line: treated as torn
                raise UserError(f"{self.journal_path}: line {k + 1} is not JSON; the journal is damaged "
                                "(pass --overwrite to start over)") from None
            entries.append(entry)
            valid += len(line) + 1
        if not entries or entries[0].get("kind") != "header":
            raise UserError(f"{self.journal_path}: no header line; pass --overwrite to start over")
        old = entries[0]
        changed = [key for key in RESUME_KEYS if old.get(key) != self.header.get(key)]
        if changed:
            raise UserError(f"{self.out}: was generated with a different {', '.join(changed)} "
                            f"(was {old.get(changed[0])!r}, now {self.header.get(changed[0])!r}); "
                            "pass --overwrite to start over, or choose another --out")
        out_bytes = None
        for entry in entries[1:]:
            if entry.get("kind") == "session":
                self.totals["sessions"] += 1
                continue
            if entry.get("i") != self.done:
                raise UserError(f"{self.journal_path}: entry for question {self.done} missing; pass --overwrite")
            self.done += 1
            self.ids.append((str(entry.get("id")), str(entry.get("qsha"))))
            self.totals.update(entry.get("counts", {}))
            out_bytes = entry["out_bytes"]
        size = self.out.stat().st_size if self.out.exists() else -1
        if out_bytes is not None and size < out_bytes:
            raise UserError(f"{self.out}: shorter than its journal records ({max(size, 0)} < {out_bytes} bytes), "
                            "so rows were lost or the file was edited; pass --overwrite to start over")
        if size > 0 and out_bytes is not None:
            with open(self.out, "rb") as f:
                first = f.readline()
            if first != _csv_line(self.columns):
                raise UserError(f"{self.out}: its header differs from this run's columns; pass --overwrite")
        if size < 0:
            self.out.touch()
        self._journal = open(self.journal_path, "r+b")
        self._journal.truncate(valid)
        self._journal.seek(valid)
        return out_bytes or 0

    # -- writing -------------------------------------------------------------------------

    def _write_out(self, data: bytes) -> None:
        self._out.write(data)
        self._out.flush()
        os.fsync(self._out.fileno())

    def _append_journal(self, entry: dict) -> None:
        self._journal.write(json.dumps(entry, ensure_ascii=False, sort_keys=True).encode("utf-8") + b"\n")
        self._journal.flush()
        os.fsync(self._journal.fileno())

    def commit(self, key: tuple[str, str], outcome: str, row: dict[str, str] | None, counts: Counter) -> None:
        """Record the next question, (id, content hash) `key`, in order: its row (if accepted), then its journal line."""
        if row is not None:
            self._write_out(_csv_line([row.get(c, "") for c in self.columns]))
        counts = Counter({k: int(v) for k, v in counts.items() if v})
        self._append_journal({"i": self.done, "id": key[0], "qsha": key[1], "outcome": outcome,
                              "counts": dict(counts), "out_bytes": self._out.tell()})
        self.done += 1
        self.ids.append(key)
        self.totals.update(counts)
        if time.monotonic() - self._last_summary > 1.0:
            self.write_summary()

    def write_summary(self) -> dict:
        """Write OUT.summary.json atomically (every counter as an int, plus a `run` block); returns the counters."""
        self._last_summary = time.monotonic()
        summary = {name: 0 for name in self.counter_names}
        summary.update({k: int(v) for k, v in sorted(self.totals.items())})
        meta = {k: v for k, v in self.header.items() if k not in ("kind", "columns")}
        doc = {**summary, "run": {"output": self.out.name, "questions_done": self.done, **meta,
                                  "last_session": self.session}}
        tmp = self.summary_path.with_name(self.summary_path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, self.summary_path)
        return summary

    def close(self) -> None:
        for f in (self._out, self._journal):
            if f is not None:
                f.close()
        self._out = self._journal = None
