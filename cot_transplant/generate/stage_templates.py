"""Generation prompt templates: three stages, each a prompt and the start of the response.

A template file (YAML) holds, per stage (`correct`, `incorrect`, `choice`), a `prompt`
and a `response` prefix: the completions endpoint (and the local backend) send
`prompt + response` and the model continues the JSON object we opened; the chat endpoint
sends `prompt` as the user turn and reads a whole object (or a continuation) back.
`candidate` says how each candidate is shown to the choice stage (inserted as a JSON
string, as in the original), `system` is an optional system message for chat.

Two slot syntaxes: `slots` (default) replaces only `{question}`, `{candidate_1}`,
`{candidate_2}` (and `{argument}`, `{answer}` in `candidate`), so JSON braces need no
escaping; `str.format` takes Python format strings with positional `{}` fields and
`{{`/`}}` braces, so the original study's texts load verbatim (`--prompts original`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from cot_transplant.errors import UserError, suggest

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
BUILTIN = ("default", "original")
STAGES = ("correct", "incorrect", "choice")
# Fields each stage's reply must hold, in the order the prompt asks for them.
STAGE_FIELDS = {"correct": ("argument", "answer"), "incorrect": ("answer", "argument"),
                "choice": ("argument", "answer_choice")}
STAGE_SLOTS = {"correct": ("question",), "incorrect": ("question",),
               "choice": ("question", "candidate_1", "candidate_2")}
CANDIDATE_SLOTS = ("argument", "answer")
SYNTAXES = ("slots", "str.format")
_TOP_KEYS = ("name", "syntax", "system", "candidate", *STAGES)
_STAGE_KEYS = ("prompt", "response")
_SLOT = re.compile(r"\{(question|candidate_1|candidate_2|argument|answer)\}")


@dataclass(frozen=True)
class Stage:
    prompt: str
    response: str


@dataclass(frozen=True)
class Rendered:
    """One request's text: `prompt` (the chat user turn) and `response` (the opened reply)."""

    prompt: str
    response: str
    system: str | None

    @property
    def completion_text(self) -> str:
        return self.prompt + self.response


@dataclass(frozen=True)
class Templates:
    """The three stage templates and the candidate format of one prompt set."""

    name: str
    syntax: str
    system: str | None
    candidate: str
    correct: Stage
    incorrect: Stage
    choice: Stage

    def __post_init__(self) -> None:
        if self.syntax not in SYNTAXES:
            raise UserError(f"prompts '{self.name}': syntax '{self.syntax}' is not one of {list(SYNTAXES)}")
        for stage in STAGES:
            slots = STAGE_SLOTS[stage]
            self._check(f"{stage}.prompt", getattr(self, stage).prompt, slots, required=True)
            self._check(f"{stage}.response", getattr(self, stage).response, slots, required=False)
        self._check("candidate", self.candidate, CANDIDATE_SLOTS, required=True)

    def _check(self, key: str, text: str, slots: tuple[str, ...], required: bool) -> None:
        where = f"prompts '{self.name}': {key}"
        if self.syntax == "slots":
            found = _SLOT.findall(text)
            unknown = sorted(set(found) - set(slots))
            if unknown:
                raise UserError(f"{where}: slot {{{unknown[0]}}} is not allowed here (allowed: "
                                f"{', '.join('{' + s + '}' for s in slots)})")
            missing = [s for s in slots if s not in found]
            if required and missing:
                raise UserError(f"{where}: must hold the slot {{{missing[0]}}}")
            return
        dummy = {s: f"<{s}>" for s in slots}
        try:
            out = text.format(*dummy.values(), **dummy)
        except (IndexError, KeyError, ValueError) as exc:
            raise UserError(f"{where}: not a valid str.format template for the fields "
                            f"{list(slots)} ({type(exc).__name__}: {exc})") from None
        missing = [s for s in slots if f"<{s}>" not in out]
        if required and missing:
            raise UserError(f"{where}: the text never uses the field {missing[0]} (fields in order: {list(slots)})")

    def _fill(self, text: str, values: dict[str, str]) -> str:
        if self.syntax == "slots":
            return _SLOT.sub(lambda m: values.get(m.group(1), m.group(0)), text)
        return text.format(*values.values(), **values)

    def render(self, stage: str, question: str, candidate_1: str = "", candidate_2: str = "") -> Rendered:
        """The request text of `stage` for a question (and, for `choice`, the shown candidates)."""
        values = {"question": question}
        if stage == "choice":
            values.update(candidate_1=candidate_1, candidate_2=candidate_2)
        st: Stage = getattr(self, stage)
        return Rendered(self._fill(st.prompt, values), self._fill(st.response, values), self.system)

    def show_candidate(self, argument: str, answer: str) -> str:
        """A candidate as the choice stage sees it: the candidate text as a JSON string literal."""
        return json.dumps(self._fill(self.candidate, {"argument": argument, "answer": answer}), ensure_ascii=False)

    @property
    def sha(self) -> str:
        """A short hash of everything that shapes a request (16 hex digits)."""
        blob = json.dumps(asdict(self), sort_keys=True, ensure_ascii=False).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()[:16]


def _from_mapping(values: object, where: str) -> Templates:
    if not isinstance(values, dict):
        raise UserError(f"{where}: expected a mapping with {', '.join(STAGES)} stages")
    for key in values:
        if key not in _TOP_KEYS:
            raise UserError(f"{where}: unknown key '{key}'{suggest(str(key), _TOP_KEYS)}")
    stages = {}
    for stage in STAGES:
        entry = values.get(stage)
        if not isinstance(entry, dict) or not isinstance(entry.get("prompt"), str):
            raise UserError(f"{where}: '{stage}' must be a mapping with a 'prompt' text (and a 'response' prefix)")
        for key in entry:
            if key not in _STAGE_KEYS:
                raise UserError(f"{where}: unknown key '{stage}.{key}'{suggest(str(key), _STAGE_KEYS)}")
        response = entry.get("response", "")
        if not isinstance(response, str):
            raise UserError(f"{where}: '{stage}.response' must be text")
        stages[stage] = Stage(entry["prompt"], response)
    for key in ("name", "syntax", "system", "candidate"):
        if values.get(key) is not None and not isinstance(values[key], str):
            raise UserError(f"{where}: '{key}' must be text")
    syntax = values.get("syntax", "slots")
    default_candidate = "{argument} Final answer: {answer}" if syntax == "slots" else "{} Final answer: {}"
    return Templates(name=values.get("name") or Path(where).stem, syntax=syntax, system=values.get("system"),
                     candidate=values.get("candidate", default_candidate), **stages)


def load_templates(spec: str | None = None) -> Templates:
    """A built-in prompt set ('default', 'original') or a YAML file.

    Raises:
        UserError: a missing file, invalid YAML, an unknown key, or a missing/unknown slot.
    """
    import yaml

    spec = spec or "default"
    path = TEMPLATE_DIR / f"{spec}.yaml" if spec in BUILTIN else Path(spec).expanduser()
    if not path.is_file():
        raise UserError(f"--prompts {spec}: no such file; give a YAML file or one of {list(BUILTIN)}")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"{spec}: not valid YAML ({type(exc).__name__})") from None
    return _from_mapping(values, str(path) if spec not in BUILTIN else spec)
