"""The benchmark end to end on a tiny model: the table's and the JSON's fields, not the timings."""

import json

from cot_transplant.bench.report import format_report
from cot_transplant.bench.runner import BenchOptions, run_bench
from cot_transplant.bench.steps import STEP_PATHS
from cot_transplant.cli import main
from cot_transplant.data.io import write_records
from cot_transplant.data.synth import synthesize

TINY = ("prompt.template=chat", "lora.r=4", "lora.alpha=8", "train.batch_size=1")
PAIRS = ["reference vs original-style", "plain-lora vs original-style", "plain-lora vs reference"]


def test_runner_fills_every_field():
    opts = BenchOptions(model="tiny-llama", rows=1, repeats=2, warmup=0, overrides=TINY, matmul_n=64)
    result = run_bench(opts, sources={"tiny": synthesize(8, 0, short=True)}, log=lambda msg: None)
    assert result["paths"] == [p.name for p in STEP_PATHS]
    src = result["sources"]["tiny"]
    assert src["rows"] == 1 and src["tokens"]["train_shapes"][0][:3:2] == [2, 1]  # 2 arguer rows, 1 chooser row
    assert len(src["matmul"]["per_round"]) == 2 and src["matmul"]["flop_per_s"] > 0
    for name in result["paths"]:
        train, ev = src["paths"][name]["train"], src["paths"][name]["eval"]
        assert len(train["seconds_per_round"]) == len(ev["seconds_per_round"]) == 2
        assert train["samples_per_s"] > 0 and ev["rows_per_s"] > 0
        assert train["flops_per_round"]["backward"] > 0 and ev["flops_per_round"]["backward"] == 0
        assert train["peak_memory_bytes"] > 0
    flops = {n: src["paths"][n]["train"]["flops_per_row"] for n in result["paths"]}
    assert flops["original-style"] > flops["plain-lora"] > flops["reference"]
    assert flops["fast"] > flops["frozen-cached"]  # no arguer pass once its states are cached
    # Pairs only between paths with the same rows per forward: 5 at the config's, 2 at two rows.
    assert set(PAIRS) | {"fast@2 vs original-style@2", "frozen-cached vs original-style"} <= set(src["ratios"])
    assert len(src["ratios"]) == 5 * 4 // 2 + 1 and "fast@2 vs fast" not in src["ratios"]
    r = src["ratios"]["reference vs original-style"]
    assert r["per_round_min"] <= r["per_round_max"] and r["ratio"] > 0 and r["ratio_of_best"] > 0
    assert r["eval_ratio"] > 0
    assert result["stamp"]["version"] and result["config"]["model"]["name"] == "tiny-llama"
    assert result["peak_rss_bytes"] > 0 and 0 < result["cpu_share"]
    json.dumps(result)

    table = format_report(result)
    assert "  forward  = 2*(P_body+P_lora)*T" in table
    assert "train samples/s" in table and "eval rows/s" in table and "peak RSS MiB" in table
    for pair in PAIRS:
        assert f"{pair}: " in table


def test_cli_with_data_file_writes_table_and_json(tmp_path, capsys):
    data = tmp_path / "rows.csv"
    write_records(synthesize(6, 1, short=True), data)
    out = tmp_path / "bench.json"
    rc = main(["bench", "--model", "tiny-llama", "--data", str(data), "--rows", "1", "--repeats", "1",
               "--warmup", "0", "--paths", "reference,original-style", "--json", str(out), *TINY])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "== data: rows.csv: 1 rows" in stdout and "== synthetic: 1 rows" in stdout
    assert stdout.count("reference vs original-style: ") == 2 and "plain-lora" not in stdout
    record = json.loads(out.read_text())
    assert set(record["sources"]) == {"data: rows.csv", "synthetic"}
    assert record["options"]["rows"] == 1 and record["flop_formula"].startswith("forward")


def test_cli_refuses_unknown_path_and_other_variants(capsys):
    assert main(["bench", "--model", "tiny-llama", "--paths", "no-such-path", "--no-synthetic", "--data", "x.csv"]) == 2
    assert main(["bench", "--model", "tiny-llama", "variant=text-only"]) == 2
    err = capsys.readouterr().err
    assert "unknown step path" in err
    assert "bench measures the joint step" in err
