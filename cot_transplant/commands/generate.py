"""`cot-transplant generate`: correct/incorrect answer pairs and choice arguments from a real LLM.

See docs/generate.md. Only the standard library at top level: heavy imports are inside `run`.
"""

from __future__ import annotations

import argparse

BACKENDS = ("openai", "local")


def register(sub) -> None:
    p = sub.add_parser(
        "generate", help="generate a dataset (pairs and choice arguments) with an LLM",
        description="Generate rows the way the original study did: a correct answer (argument first, kept if it "
                    "equals gold), an incorrect one (answer first, kept if it differs), then a choice argument over "
                    "both in a seeded random order. Resumes when OUT exists; rows are written in question order.")
    p.add_argument("--questions", required=True, metavar="FILE",
                   help="GSM8K jsonl, a Lila-layout jsonl, a CSV/JSONL with a question and gold answer, or "
                        "'synthetic:N'; with --choice-only, a pairs file (Question ... Incorrect Argument)")
    p.add_argument("--out", required=True, metavar="FILE", help="output CSV; OUT.journal.jsonl and OUT.summary.json go beside it")
    p.add_argument("--backend", required=True, metavar="{openai,local}",
                   help="openai: any OpenAI-compatible server; local: transformers on this machine")
    p.add_argument("--model", help="model name on the server (required for openai); local: 'smollm2' (default), "
                                   "a directory, a hub id, or 'tiny-llama'")
    p.add_argument("--base-url", metavar="URL", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (default: OpenAI's)")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", metavar="NAME",
                   help="environment variable holding the API key (default OPENAI_API_KEY); the key is never written")
    p.add_argument("--endpoint", default="chat", metavar="{chat,completions}",
                   help="chat: prompt as a user turn; completions: prompt plus the opened JSON reply (default chat)")
    p.add_argument("--prompts", default="default", metavar="FILE",
                   help="prompt templates: a YAML file, 'default' or 'original' (the original study's texts)")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default 0: greedy)")
    p.add_argument("--max-tokens", type=int, default=512, help="tokens per reply (default 512)")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="stop sequence (repeatable; \\n and \\t are read as newline and tab)")
    p.add_argument("--seed", type=int, default=0, help="seeds candidate order per question, and synthetic questions (default 0)")
    p.add_argument("--limit", type=int, metavar="N", help="process only the first N questions")
    p.add_argument("--datasets", metavar="A,B", help="Lila layout: keep only these `dataset` values (comma-separated)")
    p.add_argument("--choice-only", action="store_true", help="--questions is a pairs file: generate only choice arguments")
    p.add_argument("--overwrite", action="store_true", help="start over instead of resuming an existing OUT")
    p.add_argument("--concurrency", type=int, default=4, metavar="K",
                   help="questions in flight (default 4); local backend: also the batch size")
    p.add_argument("--rps", type=float, default=0.0, metavar="R", help="at most R requests per second (default 0: no limit)")
    p.add_argument("--timeout", type=float, default=60.0, metavar="SEC", help="per request (default 60)")
    p.add_argument("--max-retries", type=int, default=5,
                   help="retries per request on 429, 5xx, non-JSON replies, timeouts (default 5)")
    p.add_argument("--backoff-base", type=float, default=1.0, metavar="SEC",
                   help="retry k waits up to base*2^k seconds, jittered (default 1)")
    p.add_argument("--backoff-max", type=float, default=60.0, metavar="SEC", help="cap of one backoff wait (default 60)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it shows only on a terminal anyway)")
    p.set_defaults(func=run)


def _unescape(text: str) -> str:
    return text.replace("\\n", "\n").replace("\\t", "\t")


def check_args(args: argparse.Namespace) -> None:
    """Bounds and names argparse does not check. Raises UserError."""
    from pathlib import Path

    from cot_transplant.errors import UserError, suggest
    from cot_transplant.generate.backends import ENDPOINTS

    if args.backend not in BACKENDS:
        raise UserError(f"--backend: unknown backend '{args.backend}'{suggest(args.backend, BACKENDS)}; "
                        f"use one of {list(BACKENDS)}")
    if args.endpoint not in ENDPOINTS:
        raise UserError(f"--endpoint: '{args.endpoint}' is not one of {list(ENDPOINTS)}")
    if args.backend == "openai" and not args.model:
        raise UserError("--model: the openai backend needs a model name (what the server calls it)")
    for name, low in (("concurrency", 1), ("max_tokens", 1), ("max_retries", 0), ("limit", 0)):
        value = getattr(args, name)
        if value is not None and value < low:
            raise UserError(f"--{name.replace('_', '-')}: must be >= {low}, got {value}")
    for name in ("rps", "temperature", "backoff_base", "backoff_max"):
        if getattr(args, name) < 0:
            raise UserError(f"--{name.replace('_', '-')}: must be >= 0, got {getattr(args, name)}")
    if args.timeout <= 0:
        raise UserError(f"--timeout: must be > 0, got {args.timeout}")
    out = Path(args.out)
    if out.suffix.lower() != ".csv":
        raise UserError(f"--out {args.out}: generate writes CSV (appended row by row); give a .csv path")
    if not args.questions.startswith("synthetic:") and Path(args.questions).resolve() == out.resolve():
        raise UserError("--out: must differ from --questions")


def load_items(args: argparse.Namespace) -> list:
    """Questions (or, with --choice-only, pair records), filtered and limited. Raises UserError."""
    from pathlib import Path

    from cot_transplant.errors import UserError

    spec = args.questions
    if spec.startswith("synthetic:"):
        if args.choice_only:
            raise UserError("--choice-only needs a pairs file, not synthetic questions")
        try:
            n = int(spec.split(":", 1)[1])
        except ValueError:
            raise UserError(f"--questions {spec}: write synthetic:N with N a whole number") from None
        if n < 1:
            raise UserError(f"--questions {spec}: N must be >= 1")
        from cot_transplant.data.synth import synth_questions

        items = synth_questions(n, args.seed)
    else:
        if not Path(spec).is_file():
            raise UserError(f"--questions {spec}: file not found")
        if args.choice_only:
            from cot_transplant.data.io import read_records

            items = read_records(spec, require_choice=False)
        else:
            from cot_transplant.data.sources import read_questions

            datasets = [d.strip() for d in args.datasets.split(",") if d.strip()] if args.datasets else None
            items = read_questions(spec, datasets=datasets)
    items = list(items)
    if args.limit is not None:
        items = items[: args.limit]
    if not items:
        raise UserError(f"--questions {spec}: no questions to process" + (" after --datasets" if args.datasets else ""))
    return items


def make_backend(args: argparse.Namespace, sampling):
    import os

    from cot_transplant.generate.ratelimit import Backoff

    if args.backend == "local":
        from cot_transplant.generate.local import LocalBackend

        return LocalBackend(args.model, sampling, batch_size=args.concurrency, seed=args.seed)
    from cot_transplant.generate.backends import OpenAIBackend

    return OpenAIBackend(args.model, sampling, api_key=os.environ.get(args.api_key_env) or None,
                         api_key_env=args.api_key_env, base_url=args.base_url, timeout=args.timeout,
                         max_retries=args.max_retries, rps=args.rps or None,
                         backoff=Backoff(args.backoff_base, args.backoff_max))


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cot_transplant.generate.backends import Sampling, redact_url
    from cot_transplant.generate.journal import OutputLog
    from cot_transplant.generate.pipeline import COUNTERS, Job, output_columns, run as run_pipeline
    from cot_transplant.generate.stage_templates import load_templates
    from cot_transplant.provenance import stamp

    check_args(args)
    sampling = Sampling(endpoint=args.endpoint, temperature=args.temperature, max_tokens=args.max_tokens,
                        stop=tuple(_unescape(s) for s in args.stop))
    templates = load_templates(args.prompts)
    items = load_items(args)
    backend = make_backend(args, sampling)
    try:
        job = Job(backend, templates, sampling, seed=args.seed, choice_only=args.choice_only)
        header = {"mode": "choice" if args.choice_only else "pairs", "backend": backend.name, "model": str(backend.model),
                  "prompt_sha": templates.sha, "prompts": templates.name, "settings": job.settings_json(),
                  "columns": output_columns(job, items), "questions": args.questions}
        session = {"concurrency": args.concurrency, "rps": args.rps, "timeout": args.timeout,
                   "max_retries": args.max_retries, "limit": args.limit, "base_url": redact_url(args.base_url),
                   "stamp": stamp()}
        log = OutputLog(Path(args.out), header, counters=COUNTERS, overwrite=args.overwrite)
        log.open(session)
        try:
            resumed = log.done
            totals = run_pipeline(job, items, log, concurrency=args.concurrency,
                                  progress=False if args.no_progress else None)
        finally:
            log.close()
    finally:
        backend.close()
    rate = totals["accepted"] / max(totals["questions"], 1)
    print(f"generate: {totals['questions']} questions ({resumed} done before this run), {totals['accepted']} accepted "
          f"({rate:.1%}); {totals['requests']} requests, {totals['retries']} retries, {totals['failed_requests']} "
          f"failed, {totals['bad_format']} bad format -> {args.out} (counters: {log.summary_path.name})")
    return 0
