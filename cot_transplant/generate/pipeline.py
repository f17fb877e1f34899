"""The original generation procedure, run concurrently and committed in question order.

Per question (`make_pair` then `make_choice`):
1. correct: the argument-first prompt; kept only if its final number equals the gold answer;
2. incorrect: the answer-first prompt; kept only if its final number differs from gold;
3. choice: both candidates in an order drawn from a per-question seed (hash of the run
   seed and the question id, so a resumed run draws what an uninterrupted one would),
   each shown as argument + " Final answer: " + number; kept only if it names candidate 1 or 2.
A question stops at its first failure, and ends in exactly one outcome:
`accepted`, `bad_gold`, `failed_requests`, `bad_format_<stage>`, `correct_stage_wrong`
or `incorrect_stage_right`. With `choice_only`, rows of a pairs file go through step 3 alone.

Questions run on `concurrency` threads; results wait in their futures until every earlier
question is committed, so the output's order never depends on timing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence

from cot_transplant.data.record import COLUMNS, Record
from cot_transplant.errors import UserError
from cot_transplant.generate.backends import FAULT_KINDS, RequestFailed, Sampling
from cot_transplant.generate.journal import OutputLog
from cot_transplant.generate.parse import format_number, parse_choice, parse_number, parse_reply, same_number
from cot_transplant.generate.stage_templates import STAGE_FIELDS, STAGES, Templates

OUTCOMES = ("accepted", "bad_gold", "failed_requests", "correct_stage_wrong", "incorrect_stage_right",
            *(f"bad_format_{s}" for s in STAGES))
COUNTERS = ("questions", *OUTCOMES, "bad_format", "choice_picked_correct", "requests", "retries",
            *FAULT_KINDS, "rejected", "sessions")
QUESTION_META = ("id", "source")


class _Stop(Exception):
    """A question's first failure: its outcome counter."""

    def __init__(self, outcome: str):
        super().__init__(outcome)
        self.outcome = outcome


@dataclass
class Job:
    """What every question of a run shares."""

    backend: Any  # OpenAIBackend or LocalBackend: complete(Rendered, Counter) -> str
    templates: Templates
    sampling: Sampling
    seed: int = 0
    choice_only: bool = False

    @property
    def prefix(self) -> str:
        return "gen_choice_" if self.choice_only else "gen_"

    def settings_json(self) -> str:
        """The generation settings of `gen_settings`: compact, sorted JSON."""
        s = self.sampling
        return json.dumps({"endpoint": s.endpoint, "temperature": s.temperature, "max_tokens": s.max_tokens,
                           "stop": list(s.stop), "seed": self.seed}, sort_keys=True, separators=(",", ":"))

    def provenance(self) -> dict[str, str]:
        p = self.prefix
        return {p + "backend": self.backend.name, p + "model": str(self.backend.model),
                p + "prompt_sha": self.templates.sha, p + "settings": self.settings_json()}


def item_rng(seed: int, item_id: str) -> random.Random:
    """The per-question random stream (candidate order): a hash of the run seed and the question id."""
    digest = hashlib.sha256(f"{seed}\x00{item_id}".encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _ask(job: Job, stage: str, counts: Counter, question: str, **candidates: str) -> dict[str, str]:
    request = job.templates.render(stage, question, **candidates)
    try:
        reply = job.backend.complete(request, counts)
    except RequestFailed:
        raise _Stop("failed_requests") from None
    fields = parse_reply(reply, request.response, STAGE_FIELDS[stage])
    if fields is None:
        raise _Stop(f"bad_format_{stage}")
    return fields


def _answer(job: Job, stage: str, counts: Counter, question: str) -> tuple[str, float]:
    fields = _ask(job, stage, counts, question)
    number = parse_number(fields["answer"])
    if number is None:
        raise _Stop(f"bad_format_{stage}")
    return fields["argument"], number


def make_pair(job: Job, question, counts: Counter) -> Record:
    """Steps 1-2 for a `Question` (id, question, answer, source): a record without choice fields."""
    gold = parse_number(question.answer, single=True)
    if gold is None:
        raise _Stop("bad_gold")
    right_arg, right = _answer(job, "correct", counts, question.question)
    if not same_number(right, gold):
        raise _Stop("correct_stage_wrong")
    wrong_arg, wrong = _answer(job, "incorrect", counts, question.question)
    if same_number(wrong, gold):
        raise _Stop("incorrect_stage_right")
    extra = {"id": str(question.id), "source": str(getattr(question, "source", "") or "")}
    return Record(question=question.question, correct_answer=format_number(gold), correct_argument=right_arg,
                  incorrect_answer=format_number(wrong), incorrect_argument=wrong_arg, extra=extra)


def make_choice(job: Job, record: Record, item_id: str, counts: Counter) -> Record:
    """Step 3: the choice argument over the record's two candidates, in a per-question random order."""
    swapped = item_rng(job.seed, item_id).random() < 0.5
    right = job.templates.show_candidate(record.correct_argument, record.correct_answer)
    wrong = job.templates.show_candidate(record.incorrect_argument, record.incorrect_answer)
    first, second = (wrong, right) if swapped else (right, wrong)
    fields = _ask(job, "choice", counts, record.question, candidate_1=first, candidate_2=second)
    choice = parse_choice(fields["answer_choice"])
    if choice is None:
        raise _Stop("bad_format_choice")
    return dataclasses.replace(record, choice_answer=choice, choice_argument=fields["argument"], swapped=swapped,
                               extra={**record.extra, **job.provenance()})


def item_id(job: Job, item) -> str:
    """A question's id; for a pairs row its `id` column, else its row number."""
    if job.choice_only:
        return str(item.extra.get("id") or f"row-{item.row_id}")
    return str(item.id)


def item_key(job: Job, item) -> tuple[str, str]:
    """(id, hash of the content): ids of question files are positions, so a resume checks the content too."""
    if job.choice_only:
        parts = (item.question, item.correct_answer, item.correct_argument, item.incorrect_answer,
                 item.incorrect_argument)
    else:
        parts = (item.question, item.answer)
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()[:12]
    return item_id(job, item), digest


def process(job: Job, item) -> tuple[str, Record | None, Counter]:
    """Run one question (or pairs row) to its outcome: (outcome, accepted record or None, counters)."""
    counts: Counter = Counter(questions=1)
    try:
        record = item if job.choice_only else make_pair(job, item, counts)
        record = make_choice(job, record, item_id(job, item), counts)
    except _Stop as stop:
        counts[stop.outcome] += 1
        if stop.outcome.startswith("bad_format_"):
            counts["bad_format"] += 1
        return stop.outcome, None, counts
    counts["accepted"] += 1
    counts["choice_picked_correct"] += int(record.argument_correct)
    return "accepted", record, counts


def output_columns(job: Job, items: Sequence) -> list[str]:
    """The CSV columns: the original eight, the question metadata (or the pairs file's extras), provenance."""
    if job.choice_only:
        extra: dict[str, None] = {}
        for record in items:
            extra.update(dict.fromkeys(record.extra))
        meta = [k for k in extra if k not in COLUMNS]
    else:
        meta = list(QUESTION_META)
    return list(COLUMNS) + [k for k in meta if k not in job.provenance()] + list(job.provenance())


def run(job: Job, items: Sequence, log: OutputLog, *, concurrency: int = 4, progress: bool | None = None) -> dict:
    """Process `items[log.done:]` on `concurrency` threads, committing each in order; returns the counters.

    `log` must be open. Raises whatever a question raised that is not a counted outcome
    (UserError from a backend, a bug) after the rows before it are committed.
    """
    from tqdm import tqdm

    from cot_transplant.data.io import record_to_row

    for k, done in enumerate(log.ids[: len(items)]):
        if item_key(job, items[k]) != done:
            raise UserError(f"{log.out}: its journal records question {k} as '{done[0]}', but the input has a "
                            "different question there; use the same --questions/--datasets/--seed, or --overwrite")
    window = max(1, concurrency) * 4  # questions in flight or finished but not yet committed
    bar = tqdm(total=len(items), initial=log.done, unit="q", desc="generate", file=sys.stderr, dynamic_ncols=True,
               disable=True if progress is False else None)  # None: shown on a terminal only
    pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="generate")
    futures: dict[int, Any] = {}
    nxt = log.done
    try:
        while nxt < len(items):
            for i in range(nxt, min(len(items), nxt + window)):
                if i not in futures:
                    futures[i] = pool.submit(process, job, items[i])
            outcome, record, counts = futures.pop(nxt).result()
            log.commit(item_key(job, items[nxt]), outcome, None if record is None else record_to_row(record), counts)
            nxt += 1
            accepted, seen = log.totals["accepted"], log.totals["questions"]
            bar.set_postfix(accepted=accepted, acceptance=f"{accepted / max(seen, 1):.0%}", refresh=False)
            bar.update(1)
    finally:
        if nxt < len(items) and hasattr(job.backend, "cancel"):
            job.backend.cancel()  # stopping early: questions still in flight need not finish
        pool.shutdown(wait=False, cancel_futures=True)
        bar.close()
        summary = log.write_summary()
    return summary

