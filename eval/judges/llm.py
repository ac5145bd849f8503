"""The four-class judge through any OpenAI-compatible chat-completions endpoint.

Concurrent (bounded) requests with timeouts and retries; a strict parser (no class ->
UNJUDGED, never a refusal); an on-disk cache keyed by the judge settings, the prompt, the
response (and the image's bytes when it is sent), so that a re-run costs nothing.
Identical (query, response) pairs in one call are sent once. Only replies that name a
class are cached: a failed or unparseable reply is asked again by the next run (and a
cached reply without a class, left by an older version, is treated as a miss). The API
key is read from the environment variable that ``api_key_env`` names and is never
written anywhere: not to the cache, not to logs, not to the config.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import mimetypes
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from calib.types import Label, Sample
from eval.judges.base import (
    Judgement,
    ReasonedJudge,
    check_lengths,
    check_max_unjudged,
    empty_judgement,
    is_empty,
)
from eval.judges.cache import ReplyCache, ask_cached, cache_key
from eval.judges.http_client import endpoint_client
from eval.judges.prompt import judge_prompt, judge_query, reply_judgement

log = logging.getLogger(__name__)


def _image_payload(path: str) -> tuple[dict, str]:
    """An ``image_url`` content part (data URL) and the sha256 of the image bytes."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"judge.with_image=true but the image {file} does not exist; "
            "fix data.root or set judge.with_image=false"
        )
    data = file.read_bytes()
    mime = mimetypes.guess_type(file.name)[0] or "image/png"
    url = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return {"type": "image_url", "image_url": {"url": url}}, hashlib.sha256(data).hexdigest()


class LLMJudge(ReasonedJudge):
    """Judge with a chat model behind ``<base_url>/chat/completions``.

    Args:
        base_url: endpoint root, e.g. ``https://api.openai.com/v1`` or ``http://localhost:8000/v1``.
        model: model name sent in each request.
        api_key_env: name of the environment variable holding the key; None for no key.
        cache_dir: folder for cached replies; None disables the cache.
        concurrency: requests in flight at once.
        timeout_s: seconds to wait for one reply before counting it as failed.
        max_retries: retries after a 429 / 5xx / timeout / dropped connection.
        backoff_s: first retry delay; doubles each retry.
        max_backoff_s: cap on one retry delay (also on ``Retry-After``).
        temperature: sampling temperature sent to the endpoint.
        max_tokens: reply length cap.
        with_image: also send the sample's image (for vision judges).
        query_meta_key: show ``sample.meta[key]`` as the query instead of ``sample.prompt``.
        max_unjudged: share of UNJUDGED labels above which a run fails (see ``summary``).

    After each ``judge_with_reasons`` call, ``last_stats`` says what it cost: ``unique``
    (distinct prompts among the non-empty responses), ``cache_hits``, ``requests`` (sent
    to the endpoint) and ``failed`` (no usable reply: UNJUDGED, not cached).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        cache_dir: str | None = None,
        concurrency: int = 8,
        timeout_s: float = 60.0,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        temperature: float = 0.0,
        max_tokens: int = 64,
        with_image: bool = False,
        query_meta_key: str | None = "query",
        max_unjudged: float = 0.05,
        prompt: str = "project",
    ) -> None:
        self.max_unjudged = check_max_unjudged(max_unjudged)
        self.prompt = judge_prompt(prompt)
        self.client = endpoint_client(
            "judge",
            base_url=base_url,
            model=model,
            api_key_env=api_key_env,
            concurrency=concurrency,
            timeout_s=timeout_s,
            max_retries=max_retries,
            backoff_s=backoff_s,
            max_backoff_s=max_backoff_s,
            max_tokens=max_tokens,
        )
        self.cache = ReplyCache(cache_dir) if cache_dir else None
        self.concurrency = concurrency
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.with_image = with_image
        self.query_meta_key = query_meta_key
        self.last_stats: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"LLMJudge(model={self.client.model!r}, base_url={self.client.base_url!r})"

    def settings(self) -> dict:
        """What decides a reply (the cache key's first part). Never includes the key."""
        return {
            "prompt_version": self.prompt.version,
            "base_url": self.client.base_url.rstrip("/"),
            "model": self.client.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "with_image": self.with_image,
        }

    def _messages(self, sample: Sample, response: str) -> tuple[list[dict], str | None]:
        image = self.with_image and sample.image is not None
        text = self.prompt.render(judge_query(sample, self.query_meta_key), response, image)
        if not image:
            return self.prompt.messages(text), None
        part, digest = _image_payload(str(sample.image))
        return self.prompt.messages([{"type": "text", "text": text}, part]), digest

    def _request(self, sample: Sample, response: str) -> tuple[str, list[dict]]:
        """The cache key and the messages for one (sample, response)."""
        messages, image_digest = self._messages(sample, response)
        user_text = messages[-1]["content"]
        if isinstance(user_text, list):
            user_text = user_text[0]["text"]
        return cache_key(self.settings(), user_text, image_digest), messages

    def _judge_key(self, key: str, messages: list[dict], sample_id: str) -> tuple[Judgement, str]:
        """Judge one distinct prompt: from the cache, or by asking (and caching if usable)."""
        reply, error, outcome = ask_cached(
            self.cache,
            key,
            self.settings(),
            usable=lambda text: self.prompt.parse(text)[0] is not None,
            request=lambda: self.client.complete(
                messages, temperature=self.temperature, max_tokens=self.max_tokens
            ),
        )
        if reply is None:
            log.warning("judge request for sample %s failed: %s", sample_id, error)
            return Judgement(Label.UNJUDGED, f"no reply: {error}", 0.0, "llm.failed"), outcome
        return reply_judgement(reply, "llm", self.prompt.parse), outcome

    def judge_with_reasons(
        self, samples: Sequence[Sample], responses: Sequence[str]
    ) -> list[Judgement]:
        check_lengths(samples, responses)
        results: list[Judgement | None] = [None] * len(responses)
        where: dict[str, list[int]] = {}
        todo: dict[str, tuple[list[dict], str]] = {}
        for i, (sample, response) in enumerate(zip(samples, responses, strict=True)):
            if is_empty(response):
                results[i] = empty_judgement()
                continue
            key, messages = self._request(sample, response)
            where.setdefault(key, []).append(i)
            todo.setdefault(key, (messages, sample.id))
        keys = list(todo)
        stats = {"unique": len(keys), "cache_hits": 0, "requests": 0, "failed": 0}
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            done = pool.map(lambda k: self._judge_key(k, *todo[k]), keys)
            for key, (judgement, outcome) in zip(keys, done, strict=True):
                stats[outcome] += 1
                stats["requests"] += outcome == "failed"
                for i in where[key]:
                    results[i] = judgement
        self.last_stats = stats
        return [r for r in results if r is not None]
