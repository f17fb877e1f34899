"""LLM backends: one blocking, thread-safe `complete(request, counts) -> text` each.

`OpenAIBackend` talks to any OpenAI-compatible server through the official SDK with
the SDK's own retries off (`max_retries=0`): every attempt, fault and retry is ours to
pace and count. `LocalBackend` (in `local.py`) runs a transformers model in batches.

Counters a backend adds to the per-question `counts`:
`requests` (attempts sent), `retries`, one per fault kind (`rate_limited` for 429,
`server_errors` for 5xx/408/409, `bad_replies` for a reply that is not the protocol's
JSON, `timeouts`, `connection_errors`) and `rejected` (other 4xx, not retried). A request
given up (rejected or out of retries) raises `RequestFailed`; the pipeline counts it.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from cot_transplant.errors import UserError
from cot_transplant.generate.ratelimit import Backoff, RateLimiter, parse_retry_after
from cot_transplant.generate.stage_templates import Rendered

ENDPOINTS = ("chat", "completions")
FAULT_KINDS = ("rate_limited", "server_errors", "bad_replies", "timeouts", "connection_errors")


@dataclass(frozen=True)
class Sampling:
    """What shapes a reply; recorded (as `gen_settings`) on every row."""

    endpoint: str = "chat"
    temperature: float = 0.0
    max_tokens: int = 512
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.endpoint not in ENDPOINTS:
            raise UserError(f"--endpoint: '{self.endpoint}' is not one of {list(ENDPOINTS)}")
        if self.temperature < 0:
            raise UserError(f"--temperature: must be >= 0, got {self.temperature}")
        if self.max_tokens < 1:
            raise UserError(f"--max-tokens: must be >= 1, got {self.max_tokens}")


class RequestFailed(Exception):
    """A request gave no usable reply: rejected by the server, or out of retries (counted already)."""


class _Transient(Exception):
    def __init__(self, kind: str, retry_after: float | None = None):
        super().__init__(kind)
        self.kind, self.retry_after = kind, retry_after


def redact_url(url: str | None) -> str | None:
    """A base URL without user info, query or fragment (they may carry credentials)."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class OpenAIBackend:
    """An OpenAI-compatible server (OpenAI, vLLM, llama.cpp, TGI, ...) via the `openai` SDK.

    Args:
        api_key: the key itself (read from the environment by the caller; kept only in the client).
        max_retries: retries after the first attempt, for 429, 5xx, non-JSON replies, timeouts
            and connection errors; `Retry-After` is honoured.

    Raises (from `complete`):
        RequestFailed: the request is given up (counted).
        UserError: 401/403 (key missing or refused) or 404 (model or endpoint unknown): no
            later request would fare better, so the run stops.
    """

    name = "openai"

    def __init__(self, model: str, sampling: Sampling, *, api_key: str | None, api_key_env: str,
                 base_url: str | None = None, timeout: float = 60.0, max_retries: int = 5,
                 rps: float | None = None, backoff: Backoff = Backoff()):
        import openai

        if not api_key and base_url is None:
            raise UserError(f"the openai backend needs an API key: set the environment variable {api_key_env} "
                            "(or name another with --api-key-env), or give --base-url for a local server")
        self.model, self.sampling = model, sampling
        self.base_url, self.api_key_env, self.key_given = base_url, api_key_env, bool(api_key)
        self.max_retries, self.backoff = max_retries, backoff
        self.cancelled = threading.Event()  # set by `cancel`: waiting requests give up at once
        self.limiter = RateLimiter(rps)
        self._rng = random.Random()  # jitter only; never shapes output
        # A server that needs no key still gets a placeholder: the SDK refuses to start without one.
        self.client = openai.OpenAI(api_key=api_key or "no-key-set", base_url=base_url, timeout=timeout,
                                    max_retries=0)
        self._openai = openai

    def complete(self, request: Rendered, counts: Counter) -> str:
        for attempt in range(self.max_retries + 1):
            if self.cancelled.is_set():
                raise RequestFailed("cancelled")
            self.limiter.acquire()
            counts["requests"] += 1
            try:
                return self._call(request)
            except RequestFailed:
                counts["rejected"] += 1
                raise
            except _Transient as fault:
                counts[fault.kind] += 1
                if attempt == self.max_retries:
                    raise RequestFailed(fault.kind) from None
                counts["retries"] += 1
                self.cancelled.wait(self.backoff.delay(attempt, self._rng, fault.retry_after))
        raise AssertionError("unreachable")

    def _call(self, request: Rendered) -> str:
        openai, s = self._openai, self.sampling
        kwargs: dict = {"model": self.model, "temperature": s.temperature, "max_tokens": s.max_tokens}
        if s.stop:
            kwargs["stop"] = list(s.stop)
        try:
            if s.endpoint == "chat":
                messages = [{"role": "system", "content": request.system}] if request.system else []
                messages.append({"role": "user", "content": request.prompt})
                reply = self.client.chat.completions.create(messages=messages, **kwargs)
                text = reply.choices[0].message.content
            else:
                reply = self.client.completions.create(prompt=request.completion_text, **kwargs)
                text = reply.choices[0].text
        except openai.APITimeoutError:
            raise _Transient("timeouts") from None
        except openai.APIConnectionError:
            raise _Transient("connection_errors") from None
        except openai.APIResponseValidationError:
            raise _Transient("bad_replies") from None
        except openai.APIStatusError as exc:
            raise self._status_fault(exc) from None
        except (ValueError, AttributeError, IndexError, TypeError, KeyError):
            # JSONDecodeError on a truncated body; a text/html page parses to a str with no `.choices`.
            raise _Transient("bad_replies") from None
        if not isinstance(text, str):  # None: a reply without content
            raise _Transient("bad_replies")
        return text

    def _status_fault(self, exc) -> Exception:
        status = exc.status_code
        if status == 429:
            return _Transient("rate_limited", parse_retry_after(exc.response.headers))
        if status >= 500 or status in (408, 409):
            return _Transient("server_errors", parse_retry_after(exc.response.headers))
        where = f"{redact_url(self.base_url) or 'the OpenAI API'} ({self.sampling.endpoint} endpoint)"
        if status in (401, 403):
            if not self.key_given:
                return UserError(f"{where} answered {status}: it needs an API key; set the environment "
                                 f"variable {self.api_key_env} (or name another with --api-key-env)")
            return UserError(f"{where} answered {status}: the API key in ${self.api_key_env} was refused")
        if status == 404:
            return UserError(f"{where} answered 404: check --model '{self.model}', --base-url and --endpoint")
        return RequestFailed(f"http_{status}")

    def cancel(self) -> None:
        """Make waiting and later requests give up (a stopping run); one in flight ends by its timeout."""
        self.cancelled.set()

    def close(self) -> None:
        self.cancel()
        self.client.close()

