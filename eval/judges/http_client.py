"""A minimal client for OpenAI-compatible ``/chat/completions`` endpoints (stdlib only).

Timeouts on every request, retries with exponential backoff on 429 / 5xx / timeouts /
dropped connections (honouring ``Retry-After``), and errors that name the config key to
fix. The API key is only ever placed in the ``Authorization`` header: it is not stored in
``repr``, in errors, or in logs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from calib.errors import ConfigError, EndpointError

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class ChatResult:
    """A reply text, or None with the reason it could not be had."""

    text: str | None
    error: str | None
    attempts: int


@dataclass
class ChatClient:
    """Posts chat requests to ``<base_url>/chat/completions``."""

    base_url: str
    model: str
    timeout_s: float
    max_retries: int
    backoff_s: float
    max_backoff_s: float
    api_key: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    def _request(self, payload: dict) -> urllib.request.Request:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        body = json.dumps(payload).encode("utf-8")
        return urllib.request.Request(self.url, data=body, headers=headers, method="POST")

    def _wait(self, attempt: int, retry_after: str | None) -> None:
        delay = self.backoff_s * (2**attempt)
        if retry_after:
            with contextlib.suppress(ValueError):
                delay = max(delay, float(retry_after))
        time.sleep(min(delay, self.max_backoff_s))

    def complete(self, messages: list[dict], *, temperature: float, max_tokens: int) -> ChatResult:
        """One chat completion, retried on transient failures; never raises for those."""
        payload = {
            "model": self.model,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
        error = "no attempt made"
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                with urllib.request.urlopen(self._request(payload), timeout=self.timeout_s) as r:
                    raw = r.read()
            except urllib.error.HTTPError as exc:
                status = exc.code
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
                if status in (401, 403):
                    raise EndpointError(
                        f"{self.url} answered {status}: the API key was refused; check the "
                        "environment variable that judge.api_key_env names"
                    ) from None
                if status == 404:
                    raise EndpointError(
                        f"{self.url} answered 404: check judge.base_url (it should end before "
                        f"/chat/completions, e.g. https://api.openai.com/v1) and "
                        f"judge.model={self.model!r}"
                    ) from None
                error = f"HTTP {status}"
                if status not in RETRY_STATUS:
                    return ChatResult(None, error, attempt + 1)
            except TimeoutError:
                error = f"timed out after {self.timeout_s}s"
            except urllib.error.URLError as exc:
                if isinstance(exc.reason, TimeoutError):
                    error = f"timed out after {self.timeout_s}s"
                else:
                    error = f"connection failed: {exc.reason}"
            except (ConnectionError, OSError) as exc:
                error = f"connection failed: {type(exc).__name__}"
            else:
                return self._parse(raw, attempt + 1)
            if attempt < self.max_retries:
                log.debug("judge request failed (%s); retry %d", error, attempt + 1)
                self._wait(attempt, retry_after)
        return ChatResult(
            None, f"{error} (gave up after {self.max_retries + 1} attempts)", self.max_retries + 1
        )

    @staticmethod
    def _parse(raw: bytes, attempts: int) -> ChatResult:
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            return ChatResult(
                None, "malformed reply body (no choices[0].message.content)", attempts
            )
        if not isinstance(content, str):
            return ChatResult(None, "reply content is not text", attempts)
        return ChatResult(content, None, attempts)


def endpoint_client(
    key: str,
    *,
    base_url: str,
    model: str,
    api_key_env: str | None,
    concurrency: int,
    timeout_s: float,
    max_retries: int,
    backoff_s: float,
    max_backoff_s: float,
    max_tokens: int,
) -> ChatClient:
    """A checked client for the endpoint configured under ``key`` (``judge``, ``utility.grader``).

    Every setting problem is reported at once, naming ``<key>.<setting>``; the API key is
    read from the environment variable ``api_key_env`` names and kept only in the client.
    """
    problems = []
    if not str(base_url).startswith(("http://", "https://")):
        problems.append(f"{key}.base_url={base_url!r} must start with http:// or https://")
    if not model:
        problems.append(f"{key}.model is empty: name the model the endpoint serves")
    if concurrency < 1:
        problems.append(f"{key}.concurrency={concurrency} must be >= 1")
    if timeout_s <= 0:
        problems.append(f"{key}.timeout_s={timeout_s} must be > 0")
    if max_retries < 0:
        problems.append(f"{key}.max_retries={max_retries} must be >= 0")
    if backoff_s < 0 or max_backoff_s < 0:
        problems.append(f"{key}.backoff_s and {key}.max_backoff_s must be >= 0")
    if max_tokens < 1:
        problems.append(f"{key}.max_tokens={max_tokens} must be >= 1")
    api_key = os.environ.get(api_key_env) if api_key_env else None
    if api_key_env and not api_key:
        problems.append(
            f"{key}.api_key_env={api_key_env!r} names an environment variable that is not "
            f"set: export {api_key_env}=<key>, or set {key}.api_key_env=null for an "
            "endpoint without a key"
        )
    if problems:
        raise ConfigError(problems)
    return ChatClient(
        base_url=base_url,
        model=model,
        timeout_s=timeout_s,
        max_retries=max_retries,
        backoff_s=backoff_s,
        max_backoff_s=max_backoff_s,
        api_key=api_key,
    )
