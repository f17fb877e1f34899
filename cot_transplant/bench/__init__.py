"""`cot-transplant bench`: the step paths' throughput, achieved FLOP/s and memory, side by side.

Modules: `flops` (pure FLOP counts), `steps` (the registry of step paths: original-style,
reference, plain LoRA), `rows` (the rows measured), `runner` (interleaved timing),
`report` (table and ratio lines); for `cot-transplant plan`, `trace` (the step traced on the meta
device: memory and FLOPs without weights), `plan` with `plan_inputs`, `plan_memory` and `plan_report`.
"""
