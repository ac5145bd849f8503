"""Grading open answers (MM-Vet style) with an LLM behind an OpenAI-compatible endpoint.

The grader compares the model's answer with the reference and replies with a correctness
score in [0, 1]; a reply without such a number leaves the item *ungraded* (left out of
the mean, counted apart) — never silently wrong or right. It reuses the judges' HTTP
client (timeouts, retries, the key only in the ``Authorization`` header) and their
on-disk reply cache, so a re-run costs nothing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from calib.types import Sample
from eval.judges.cache import ReplyCache, ask_cached, cache_key
from eval.judges.http_client import endpoint_client

log = logging.getLogger(__name__)

GRADER_VERSION = 1  # bump when the prompt changes, so cached grades are not reused
SYSTEM_PROMPT = (
    "You grade answers to questions about images. You see the question, a reference answer "
    "and a model's answer. Reply with one number between 0.0 and 1.0: 1.0 when the model's "
    "answer agrees with the reference, 0.0 when it is wrong or missing, and partial credit "
    "when it is partly right. In a reference, <AND> joins parts that must all be present and "
    "<OR> separates alternatives that are each fully correct. Judge meaning, not wording. "
    "Reply with the number only."
)
SCORE = re.compile(r"(?<![\d.])(1(?:\.0+)?|0(?:\.\d+)?|\.\d+)(?![\d.])")


def parse_grade(reply: str) -> float | None:
    """The first number in [0, 1] of a reply ("0.5", "Score: 1", "1.0 - correct"), else None."""
    match = SCORE.search(reply or "")
    return float(match.group(1)) if match else None


class LLMGrader:
    """Scores open answers; ``utility.grader`` in ``conf/utility/mmvet.yaml``.

    Args:
        base_url: endpoint root, e.g. ``https://api.openai.com/v1``.
        model: model name sent with each request.
        api_key_env: NAME of the environment variable holding the key; None for no key.
        cache_dir: folder for cached replies; None disables the cache.
        concurrency: requests in flight at once.
        timeout_s, max_retries, backoff_s, max_backoff_s: as for the ``llm`` judge.
        max_tokens: reply length cap.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None,
        cache_dir: str | None,
        concurrency: int,
        timeout_s: float,
        max_retries: int,
        backoff_s: float,
        max_backoff_s: float,
        max_tokens: int,
    ):
        self.client = endpoint_client(
            "utility.grader",
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
        self.concurrency, self.max_tokens = concurrency, max_tokens

    def __repr__(self) -> str:
        return f"LLMGrader(model={self.client.model!r}, base_url={self.client.base_url!r})"

    def _settings(self) -> dict:
        return {
            "grader_version": GRADER_VERSION,
            "base_url": self.client.base_url.rstrip("/"),
            "model": self.client.model,
            "max_tokens": self.max_tokens,
        }

    def _grade_one(self, item: Sample, response: str) -> float | None:
        if not (response or "").strip():
            return 0.0  # no answer is a wrong answer; nothing to ask
        user = (
            f"Question: {item.prompt}\nReference answer: {item.reference}\n"
            f"Model answer: {response}\nScore:"
        )
        messages = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": user},
        ]
        reply, error, _ = ask_cached(
            self.cache,
            cache_key(self._settings(), user),
            self._settings(),
            usable=lambda text: parse_grade(text) is not None,
            request=lambda: self.client.complete(
                messages, temperature=0.0, max_tokens=self.max_tokens
            ),
        )
        if reply is None:
            log.warning("grading %s failed: %s", item.id, error)
            return None
        grade = parse_grade(reply)
        if grade is None:  # not cached: the next run asks again
            log.warning("grader reply for %s has no score in [0, 1]: %r", item.id, reply[:80])
        return grade

    def grade(self, items: Sequence[Sample], responses: Sequence[str]) -> list[float | None]:
        if len(items) != len(responses):
            raise ValueError(f"{len(items)} items but {len(responses)} responses to grade")
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._grade_one, items, responses))
