"""Prompt templates for the two passes, as text with named slots.

A template is plain text with the slots `{question}`, `{argument}` (arguer) and
`{question}`, `{candidate_1}`, `{candidate_2}`, `{choice_argument}` (chooser). Only
these exact slot names are replaced, so JSON braces in a template need no escaping.
Template text may hold special tokens (chat markup); slot text never does: it is
tokenized with special-token parsing off (see `prompts.segments`).

The chooser template must end right where the chosen candidate's number comes
next; the two choice tokens are the tokenizer's ids of "1" and "2" there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cot_transplant.errors import UserError

ARGUER_SLOTS = ("question", "argument")
CHOOSER_SLOTS = ("question", "candidate_1", "candidate_2", "choice_argument")
SPAN_SLOTS = ("argument", "candidate_1", "candidate_2")
_SLOT = re.compile(r"\{(question|argument|candidate_1|candidate_2|choice_argument)\}")

# Our wording of the original Alpaca/JSON structure (../shared/seed-data/original_prompts.md has the
# exact original texts, loadable with prompt.template_file).
ALPACA_ARGUER = """Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.

### Instruction:
A question is given in the following JSON format:
{
    "question": "(the question)"
}
Write a step by step argument that answers the question. Reply in the following JSON format:
{
    "argument": "(the step by step argument)",
    "answer": "(the final answer as a number)"
}

### Input:
{
    "question": "{question}"
}

### Response:
{
    "argument": "{argument}"""

ALPACA_CHOOSER = """Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.

### Instruction:
A question and two answer candidates are given in the following JSON format:
{
    "question": "(the question)",
    "candidate_1": "(answer candidate 1)",
    "candidate_2": "(answer candidate 2)"
}
Analyze the candidates and argue which one is correct and why. Reply in the following JSON format:
{
    "argument": "(the argument)",
    "answer_choice": ("candidate_1" or "candidate_2")
}

### Input:
{
    "question": "{question}",
    "candidate_1": {candidate_1},
    "candidate_2": {candidate_2}
}

### Response:
{
    "argument": "{choice_argument}",
    "answer_choice": "candidate_"""

# Compact chat wording: the model's own chat markup around short instructions.
CHAT_SYSTEM = "You check math reasoning."
CHAT_ARGUER_USER = "Solve step by step: {question}"
CHAT_ARGUER_ASSISTANT = "{argument}"
CHAT_CHOOSER_USER = ("Question: {question}\nCandidate 1: {candidate_1}\nCandidate 2: {candidate_2}\n"
                     "Which candidate is correct?")
CHAT_CHOOSER_ASSISTANT = "{choice_argument} So the correct one is candidate_"


@dataclass(frozen=True)
class Template:
    """The arguer and chooser prompt texts of one template family."""

    name: str
    arguer: str
    chooser: str

    def __post_init__(self) -> None:
        for role, text, slots in (("arguer", self.arguer, ARGUER_SLOTS), ("chooser", self.chooser, CHOOSER_SLOTS)):
            found = _SLOT.findall(text)
            if sorted(found) != sorted(slots):
                raise UserError(f"template '{self.name}': the {role} text must hold each of "
                                f"{', '.join('{' + s + '}' for s in slots)} exactly once (found {found})")
        if split_slots(self.chooser)[-1][1] is not None:
            raise UserError(f"template '{self.name}': the chooser text must end with template text")


def split_slots(text: str) -> list[tuple[str, str | None]]:
    """Split a template into [(literal or slot value placeholder, slot name or None)]; empty literals dropped."""
    parts: list[tuple[str, str | None]] = []
    pos = 0
    for m in _SLOT.finditer(text):
        if m.start() > pos:
            parts.append((text[pos:m.start()], None))
        parts.append(("", m.group(1)))
        pos = m.end()
    if pos < len(text):
        parts.append((text[pos:], None))
    return parts


def _render_chat(tokenizer, user: str, assistant_prefix: str) -> str:
    """The chat markup around a user turn and the start of the assistant turn, slots intact."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError("prompt.template 'chat': this tokenizer has no chat template; use 'alpaca-json'")
    messages = [{"role": "system", "content": CHAT_SYSTEM}, {"role": "user", "content": user}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text + assistant_prefix


def chat_template(tokenizer) -> Template:
    """The `chat` family: the tokenizer's own chat template around compact instructions."""
    return Template("chat", _render_chat(tokenizer, CHAT_ARGUER_USER, CHAT_ARGUER_ASSISTANT),
                    _render_chat(tokenizer, CHAT_CHOOSER_USER, CHAT_CHOOSER_ASSISTANT))


def load_template_file(path: str | Path) -> Template:
    """A YAML file with `arguer` and `chooser` strings (and an optional `name`)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: template file not found; give a YAML file with 'arguer' and 'chooser' texts")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        raise UserError(f"{path}: not valid YAML; expected 'arguer' and 'chooser' texts") from None
    if not isinstance(values, dict) or not {"arguer", "chooser"} <= set(values):
        raise UserError(f"{path}: expected a mapping with 'arguer' and 'chooser' texts")
    return Template(str(values.get("name", path.stem)), str(values["arguer"]), str(values["chooser"]))


def get_template(name: str, tokenizer, template_file: str | None = None) -> Template:
    """Resolve the configured template family (a file wins over the name)."""
    if template_file:
        return load_template_file(template_file)
    if name == "alpaca-json":
        return Template("alpaca-json", ALPACA_ARGUER, ALPACA_CHOOSER)
    if name == "chat":
        return chat_template(tokenizer)
    raise UserError(f"prompt.template: unknown template '{name}'; use 'alpaca-json' or 'chat'")


def choice_token_ids(tokenizer, template: Template) -> tuple[int, int]:
    """Token ids of "1" and "2" where the chooser prompt ends.

    Raises:
        UserError: when either is not a single token there.
    """
    tail = template.chooser[-40:]
    base = tokenizer(tail, add_special_tokens=False)["input_ids"]
    ids = []
    for digit in "12":
        ext = tokenizer(tail + digit, add_special_tokens=False)["input_ids"]
        if ext[: len(base)] != base or len(ext) != len(base) + 1:
            raise UserError(f"template '{template.name}': '{digit}' is not a single token after the chooser "
                            f"prompt's end under this tokenizer; end the template where a lone digit follows")
        ids.append(ext[-1])
    return ids[0], ids[1]
