"""Tiny rows and tiny-model configs for training tests (tiny random decoders, no bundled weights)."""

import random

from cot_transplant.config import load_config
from cot_transplant.data.record import Record

NAMES = ["Ann", "Bo", "Cy", "Di", "Ed", "Flo", "Gus", "Hal"]


def make_records(n: int, seed: int = 0) -> list[Record]:
    """Two-step sums with a slip in the last step; the argument picks the right one 3 times in 5."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b, c = rng.randint(2, 9), rng.randint(2, 9), rng.randint(2, 9)
        name = rng.choice(NAMES)
        right, wrong = a * b + c, a * b + c + rng.randint(1, 3)
        swapped = rng.random() < 0.5
        picks_right = rng.random() < 0.6
        choice = "candidate_1" if picks_right != swapped else "candidate_2"
        out.append(Record(
            question=f"{name} buys {a} packs of {b} pens and {c} more pens. How many pens?",
            correct_answer=f"{right}.0", correct_argument=f"{a} x {b} = {a * b}. {a * b} + {c} = {right}.",
            incorrect_answer=f"{wrong}.0", incorrect_argument=f"{a} x {b} = {a * b}. {a * b} + {c} = {wrong}.",
            choice_answer=choice, choice_argument=f"I pick {choice.replace('_', ' ')}: its sum is right.",
            swapped=swapped, row_id=i))
    return out


def tiny_cfg(*overrides: str):
    return load_config(None, [
        "model.name=tiny-llama", "prompt.template=chat", "train.batch_size=2", "train.accumulate_to=4",
        "train.max_samples=8", "eval.every=4", "lora.r=4", "lora.alpha=8", "lora.dropout=0.0",
        "run.progress=false", "run.tensorboard=false", "data.val_fraction=0.25", "data.test_fraction=0.25",
        "checkpoint.every=1", "train.optim.lr=1e-2", *overrides])


def hash_dir(path) -> dict[str, str]:
    """{relative path: sha256} of every file under `path`: proof that a command only read it."""
    import hashlib

    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}
