"""The `local` backend: transformers generation on any loadable model, batched across threads.

The pipeline's worker threads each call `complete` and block; one generation thread
gathers whatever requests are waiting (up to `batch_size`, waiting `max_wait` seconds
for stragglers) into a left-padded batch. So `--concurrency K` is also the batch size.

Determinism: greedy decoding (temperature 0) gives the same text for a prompt up to the
float noise of padding against different batch neighbours; sampling (temperature > 0)
is not reproducible across runs or resumes.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter

from cot_transplant.generate.backends import Sampling
from cot_transplant.generate.stage_templates import Rendered


class _Pending:
    __slots__ = ("text", "chat", "reply", "error", "done")

    def __init__(self, text: str, chat: bool):
        self.text, self.chat = text, chat
        self.reply: str | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()


class LocalBackend:
    """A causal LM loaded with `cot_transplant.models` ('smollm2' bundled by default, 'tiny-llama', a dir, a hub id).

    With the chat endpoint the prompt goes through the tokenizer's chat template (when it has one)
    and the reply is opened with the template's response prefix, as with completions.
    """

    name = "local"

    def __init__(self, model: str | None, sampling: Sampling, *, batch_size: int = 8, max_wait: float = 0.02,
                 device: str | None = None, seed: int = 0):
        import torch

        from cot_transplant.models import DEFAULT_MODEL, load_model, load_tokenizer

        self.model_name = model or DEFAULT_MODEL
        self.sampling, self.batch_size, self.max_wait, self.seed = sampling, max(1, batch_size), max_wait, seed
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = load_tokenizer(self.model_name)
        self.tokenizer.padding_side = "left"  # generation continues every row from its own last token
        self.lm = load_model(self.model_name, seed=seed).to(self.device).eval()
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="local-generate", daemon=True)
        self._thread.start()

    @property
    def model(self) -> str:
        return self.model_name

    def complete(self, request: Rendered, counts: Counter) -> str:
        counts["requests"] += 1
        chat = self.sampling.endpoint == "chat" and bool(getattr(self.tokenizer, "chat_template", None))
        if chat:
            messages = [{"role": "system", "content": request.system}] if request.system else []
            messages.append({"role": "user", "content": request.prompt})
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            text += request.response
        else:
            text = request.completion_text
        item = _Pending(text, chat)
        self._queue.put(item)
        item.done.wait()
        if item.error is not None:
            raise item.error
        return item.reply

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self.max_wait
            stop = False
            while len(batch) < self.batch_size:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            try:
                for item, reply in zip(batch, self._generate(batch)):
                    item.reply = reply
            except BaseException as exc:  # handed to every waiting caller, who re-raises it
                for item in batch:
                    item.error = exc
            finally:
                for item in batch:
                    item.done.set()
            if stop:
                return

    def _generate(self, batch: list[_Pending]) -> list[str]:
        import torch

        s, tok = self.sampling, self.tokenizer
        replies: list[str] = [""] * len(batch)
        # Chat-rendered text already holds its special tokens; plain text gets the tokenizer's own.
        for chat in (True, False):
            idx = [i for i, item in enumerate(batch) if item.chat == chat]
            if not idx:
                continue
            enc = tok([batch[i].text for i in idx], return_tensors="pt", padding=True,
                      add_special_tokens=not chat).to(self.device)
            kwargs: dict = {"max_new_tokens": s.max_tokens, "pad_token_id": tok.pad_token_id}
            if s.temperature > 0:
                kwargs.update(do_sample=True, temperature=s.temperature)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            if s.stop:
                kwargs["stopping_criteria"] = [_StopOnText(tok, enc["input_ids"].shape[1], s.stop)]
            with torch.no_grad():
                out = self.lm.generate(**enc, **kwargs)  # (B, T_prompt + T_new)
            texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            for i, text in zip(idx, texts):
                replies[i] = _cut_at_stop(text, s.stop)
        return replies

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=60)


class _StopOnText:
    """Stops a row once its *generated* text holds a stop sequence.

    transformers' own `stop_strings` also match across the prompt's end (a prompt ending in
    `"` plus a generated ` "` matches the stop `" `), which the OpenAI API never does.
    """

    def __init__(self, tokenizer, start: int, stop: tuple[str, ...]):
        self.tokenizer, self.start, self.stop = tokenizer, start, stop

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        texts = self.tokenizer.batch_decode(input_ids[:, self.start:], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stop) for t in texts], device=input_ids.device)


def _cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """The text before the first stop sequence (as the OpenAI API returns it)."""
    cut = len(text)
    for s in stop:
        pos = text.find(s)
        if pos != -1:
            cut = min(cut, pos)
    return text[:cut]
