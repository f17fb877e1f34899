"""A scripted OpenAI-compatible server on 127.0.0.1 (stdlib only) for the generate tests.

It speaks `POST /v1/chat/completions` and `POST /v1/completions`. Replies are scripted
by the question text, so they do not depend on request order or concurrency:

- `Item N` names the question; `gold G` is its gold answer.
- `[STAGE:a,b,...]` (STAGE = correct, incorrect, choice) lists what attempts 1, 2, ...
  of that stage get; attempts past the list get `ok`. Actions:
  `ok`, `429` (with Retry-After), `500`, `400`, `html` (200 text/html page), `502html`,
  `stall` (answers after `stall` seconds), `trunc` (truncated JSON body),
  `garbage` (a well-formed reply whose text is not the asked format), `wrong` (correct
  stage: gold + 1), `right` (incorrect stage: gold), `pickwrong` (choice: the wrong candidate).
- `[delay:S]` delays every reply about that question by S seconds (on top of `delay`).

The stage is read from the prompt: `"answer_choice"` means choice; otherwise whether the
asked format lists `"argument"` or `"answer"` first. On the completions endpoint the
reply continues the JSON the prompt opened; on chat it is a whole object.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_DIRECTIVE = re.compile(r"\[(correct|incorrect|choice):([^\]]*)\]")
_DELAY = re.compile(r"\[delay:([\d.]+)\]")


def stage_of(text: str) -> str:
    if '"answer_choice"' in text:
        return "choice"
    return "correct" if text.index('"argument"') < text.index('"answer"') else "incorrect"


class FakeOpenAI:
    """Start with `with FakeOpenAI(...) as server:`; `server.url` is the base URL (…/v1)."""

    def __init__(self, *, api_key: str | None = None, delay: float = 0.0, stall: float = 1.0,
                 retry_after: str = "0"):
        self.api_key, self.delay, self.stall, self.retry_after = api_key, delay, stall, retry_after
        self.attempts: Counter = Counter()
        self.log: list[dict] = []  # one entry per request: item, stage, attempt, action, t, path
        self.bodies: list[dict] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                try:
                    fake._handle(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> "FakeOpenAI":
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def actions(self, stage: str) -> list[dict]:
        return [e for e in self.log if e["stage"] == stage]

    # -- protocol ------------------------------------------------------------------------

    def _send(self, h, status: int, body: bytes, ctype: str = "application/json", headers: dict | None = None):
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)
        h.wfile.flush()

    def _error(self, h, status: int, message: str, headers: dict | None = None):
        body = json.dumps({"error": {"message": message, "type": "test", "code": status}}).encode()
        self._send(h, status, body, headers=headers)

    def _handle(self, h) -> None:
        length = int(h.headers.get("Content-Length", 0))
        body = json.loads(h.rfile.read(length))
        chat = h.path.endswith("/chat/completions")
        if not chat and not h.path.endswith("/completions"):
            return self._error(h, 404, "no such endpoint")
        if self.api_key is not None and h.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._error(h, 401, "invalid api key")
        text = body["messages"][-1]["content"] if chat else body["prompt"]
        stage = stage_of(text)
        item = int(re.search(r"Item (\d+)", text).group(1))
        gold = int(re.search(r"gold (-?\d+)", text).group(1))
        script = dict(_DIRECTIVE.findall(text)).get(stage, "")
        steps = [s.strip() for s in script.split(",") if s.strip()]
        with self._lock:
            attempt = self.attempts[(item, stage)]
            self.attempts[(item, stage)] += 1
            action = steps[attempt] if attempt < len(steps) else "ok"
            self.log.append({"item": item, "stage": stage, "attempt": attempt, "action": action,
                             "t": time.monotonic(), "chat": chat})
            self.bodies.append(body)
        delay = self.delay + sum(float(d) for d in _DELAY.findall(text))
        if delay:
            time.sleep(delay)
        if action == "429":
            return self._error(h, 429, "slow down", {"Retry-After": self.retry_after})
        if action == "500":
            return self._error(h, 500, "boom")
        if action == "400":
            return self._error(h, 400, "prompt too long")
        if action == "502html":
            return self._send(h, 502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
        if action == "html":
            return self._send(h, 200, b"<html><body>Sign in to continue</body></html>", "text/html")
        if action == "stall":
            time.sleep(self.stall)
        content = self._content(stage, action, gold, text, chat)
        if chat:
            reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": content}}]}
        else:
            reply = {"id": "x", "object": "text_completion", "created": 0, "model": body["model"],
                     "choices": [{"index": 0, "finish_reason": "stop", "text": content, "logprobs": None}]}
        data = json.dumps(reply).encode()
        if action == "trunc":
            data = data[: len(data) // 2]
        self._send(h, 200, data)

    @staticmethod
    def _content(stage: str, action: str, gold: int, text: str, chat: bool) -> str:
        if action == "garbage":
            return "I am not sure what you mean."
        if stage == "choice":
            # rindex: the asked format names "candidate_2" before the input does.
            right_first = text.index(f"Final answer: {float(gold)}") < text.rindex('"candidate_2": "')
            pick = 1 if right_first != (action == "pickwrong") else 2
            obj = {"argument": f"Candidate {pick} adds up.\nIt is right.", "answer_choice": f"candidate_{pick}"}
        else:
            value = gold if (stage == "correct") != (action == "wrong") else gold + 1
            if stage == "incorrect" and action == "right":
                value = gold
            answer = f"${value:,}"
            argument = f"First step.\nSo the total is {value}."
            obj = ({"argument": argument, "answer": answer} if stage == "correct"
                   else {"answer": answer, "argument": argument})
        if chat:
            return json.dumps(obj, indent=4)
        # Completions: continue the object the prompt opened with its first field's quote.
        whole = json.dumps(obj, indent=4)
        first = next(iter(obj))
        opened = '{\n    "%s": "' % first
        assert whole.startswith(opened), whole
        return whole[len(opened):]
