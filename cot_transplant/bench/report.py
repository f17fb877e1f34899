"""The benchmark's result record as a table and ratio lines (stdout); the record itself goes to JSON."""

from __future__ import annotations

MIB = 2 ** 20


def _mib(n_bytes: int | None) -> str:
    return "-" if n_bytes is None else f"{n_bytes / MIB:.0f}"


def format_report(result: dict) -> str:
    """The header, one table per row source, the matmul rate, and one `X vs Y: r x` line per pair."""
    m = result["model"]
    opts = result["options"]
    lines = [
        f"cot-transplant bench: {m['name']} ({m['layers']} layers, hidden {m['hidden']}, vocab {m['vocab']}, "
        f"LoRA r={m['lora_r']} on {','.join(m['lora_targets'])}), {result['device']}",
        f"{opts['repeats']} measured rounds (medians) after {opts['warmup']} warm-up, paths interleaved in "
        f"rotating order; batches of <= {result['config']['train']['batch_size']} rows (train), "
        f"<= {result['config']['eval']['batch_size']} (eval); template {result['config']['prompt']['template']}"
        + (f", rows cut to {result['config']['prompt']['max_tokens']} tokens"
           if result["config"]["prompt"]["max_tokens"] else ""),
        "FLOPs (docs/bench.md):", *("  " + line for line in result["flop_formula"].splitlines()),
        f"  P_body={m['body_params']:,}  P_head={m['head_params']:,}  P_lora={m['lora_params_per_adapter']:,}",
    ]
    mem = "peak GPU MiB" if result["device"].startswith("cuda") else "peak RSS MiB"
    header = (f"{'path':<16}{'train samples/s':>16}{'GFLOP/sample':>14}{'GFLOP/s':>10}{'of matmul':>11}"
              f"{'eval rows/s':>13}{'eval GFLOP/s':>14}{mem:>14}")
    for name, src in result["sources"].items():
        tok = src["tokens"]
        pad = 1 - tok["real_per_round"] / tok["padded_per_round"]
        lines += ["", f"== {name}: {src['rows']} rows (sample seed {opts['seed']}; "
                      f"{src['skipped_rows']} skipped as too long) ==",
                  f"mean tokens: arguer {tok['arguer_mean']:.0f}, chooser {tok['chooser_mean']:.0f}; padding "
                  f"{pad:.0%}; memory before the rounds {_mib(src['baseline_memory_bytes'])} MiB", header]
        for path, p in src["paths"].items():
            tr, ev = p["train"], p["eval"]
            peak = max((x for x in (tr["peak_memory_bytes"], ev["peak_memory_bytes"]) if x is not None), default=None)
            lines.append(f"{path:<16}{tr['samples_per_s']:>16.4g}{tr['flops_per_row'] / 1e9:>14.1f}"
                         f"{tr['achieved_flop_per_s'] / 1e9:>10.2f}{tr['of_matmul']:>11.1%}"
                         f"{ev['rows_per_s']:>13.4g}{ev['achieved_flop_per_s'] / 1e9:>14.2f}"
                         f"{_mib(peak):>14}")
        lines.append(f"matmul {src['matmul']['n']}x{src['matmul']['n']} fp32: "
                     f"{src['matmul']['flop_per_s'] / 1e9:.2f} GFLOP/s (median)")
        for pair, r in src["ratios"].items():
            lines.append(f"{pair}: {r['ratio']:.2f}x  (per round {r['per_round_min']:.2f}-{r['per_round_max']:.2f}x; "
                         f"fastest rounds {r['ratio_of_best']:.2f}x; eval {r['eval_ratio']:.2f}x)")
    lines += ["", f"process peak RSS {result['peak_rss_bytes'] / MIB:.0f} MiB; wall {result['wall_s']:.0f} s"
              + _cpu_note(result)]
    return "\n".join(lines)


def _cpu_note(result: dict) -> str:
    """On CPU: the share of the threads' time the process got, and what that suggests."""
    share = result.get("cpu_share")
    if share is None:
        return ""
    note = f"; CPU use {share:.0%} of {result['cpu_threads']} threads' time"
    if share < 0.8:
        note += " (the cores were shared: absolute figures are low and rounds vary; read the per-round ranges)"
    return note
