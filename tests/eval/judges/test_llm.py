"""The API judge against a real HTTP server on 127.0.0.1 that plays scripted replies.

Each response text carries a ``SCRIPT=<name>`` marker that tells the server how to answer:
a good label, a malformed reply, a 500 then success, a 429 then success, a hang past the
client's timeout (once, or always), ... The server counts attempts per script, records the
Authorization header and the peak number of requests in flight.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hydra.utils import instantiate

from calib.cli.common import compose_config
from calib.types import Judge, Label
from eval.judges.cache import (
    ReplyCache,
    clear_judge_caches,
    judge_cache_dir,
    judge_cache_stats,
)
from eval.judges.http_client import JudgeConfigError
from eval.judges.llm import LLMJudge
from eval.judges.prompt import parse_class
from tests.eval.judges.helpers import ScriptedServer, make_samples, scripted_server

SECRET = "sk-test-DO-NOT-LEAK-4f1c9e"
KEY_ENV = "VSC_CALIB_TEST_JUDGE_KEY"


@pytest.fixture
def server():
    with scripted_server() as srv:
        yield srv


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    return SECRET


def make_judge(server: ScriptedServer, cache_dir: Path | None, **overrides) -> LLMJudge:
    settings = dict(
        base_url=server.base_url,
        model="scripted",
        api_key_env=KEY_ENV,
        cache_dir=str(cache_dir) if cache_dir else None,
        concurrency=2,
        timeout_s=0.5,
        max_retries=1,
        backoff_s=0.01,
        max_backoff_s=0.05,
    )
    settings.update(overrides)
    return LLMJudge(**settings)


SCRIPTS = {
    "good": Label.WARN,
    "comply": Label.COMPLY,
    "malformed": Label.UNJUDGED,
    "ambiguous": Label.UNJUDGED,
    "badjson": Label.UNJUDGED,
    "flaky500": Label.REFUSE,
    "ratelimit": Label.COMPLY,
    "hangonce": Label.IRRELEVANT,
    "hang": Label.UNJUDGED,
}


def test_labels_retries_unjudged_cache_and_no_key_on_disk(server, api_key, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    cache = tmp_path / "cache"
    names = [*SCRIPTS, "good2", "good3", "good4"]
    responses = [f"Some answer. SCRIPT={name}" for name in names] + ["   "]
    samples = make_samples(len(responses))
    judgements = make_judge(server, cache).judge_with_reasons(samples, responses)

    labels = dict(zip([*names, "empty"], [j.label for j in judgements], strict=True))
    for name, expected in SCRIPTS.items():
        assert labels[name] == expected, (name, judgements[names.index(name)].reason)
    assert labels["empty"] == Label.EMPTY  # never sent
    assert server.attempts["flaky500"] == 2  # 500, then success
    assert server.attempts["ratelimit"] == 2  # 429 (Retry-After: 0), then success
    assert server.attempts["hangonce"] == 2  # timed out once, then success
    assert server.attempts["hang"] == 2  # 1 + max_retries, then UNJUDGED
    assert server.attempts["malformed"] == 1  # a reply without a class is not retried
    assert server.auth_headers == {f"Bearer {SECRET}"}

    # A re-run with a fresh judge costs nothing except what failed: in transport, or with
    # a reply that named no class (neither is cached, so a re-run can still get a label).
    before = Counter(server.attempts)
    again = make_judge(server, cache).label(samples, responses)
    assert again == [j.label for j in judgements]
    new_requests = {k for k in server.attempts if server.attempts[k] != before[k]}
    assert new_requests == {"hang", "badjson", "malformed", "ambiguous"}

    # The key is in no file the run wrote, in no log record, in no reason, in no repr.
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written, "the cache should have written files"
    for path in written:
        assert SECRET not in path.read_text(encoding="utf-8", errors="ignore"), path
    assert SECRET not in caplog.text
    assert all(SECRET not in j.reason for j in judgements)
    judge = make_judge(server, cache)
    assert SECRET not in repr(judge) and SECRET not in repr(judge.client)


def test_concurrency_is_bounded(server, api_key):
    responses = [f"SCRIPT=slow {i}" for i in range(8)]
    labels = make_judge(server, None, concurrency=2).label(make_samples(8), responses)
    assert labels == [Label.COMPLY] * 8
    assert server.peak_in_flight == 2  # requests overlap, but never more than judge.concurrency


def test_image_is_sent_when_asked(server, api_key, tmp_path):
    image = tmp_path / "pixel.png"
    image.write_bytes(
        bytes.fromhex(
            "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
            "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
        )
    )
    samples = make_samples(1, image=str(image))
    judge = make_judge(server, None, with_image=True)
    assert judge.label(samples, ["SCRIPT=image"]) == [Label.REFUSE]
    judge = make_judge(server, None, with_image=False)
    assert judge.label(samples, ["SCRIPT=image"]) == [Label.UNJUDGED]


def test_refused_key_is_a_config_error(tmp_path, monkeypatch):
    class Refuse(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv(KEY_ENV, "wrong")
        judge = LLMJudge(
            base_url=f"http://127.0.0.1:{srv.server_address[1]}/v1",
            model="m",
            api_key_env=KEY_ENV,
            timeout_s=2,
            max_retries=0,
        )
        with pytest.raises(JudgeConfigError, match=r"judge\.api_key_env"):
            judge.label(make_samples(1), ["hello"])
    finally:
        srv.shutdown()
        srv.server_close()


def test_config_problems_are_reported_together(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(ValueError) as info:
        LLMJudge(base_url="localhost:8000", model="", api_key_env=KEY_ENV, concurrency=0)
    message = str(info.value)
    for key in ("judge.base_url", "judge.model", "judge.concurrency", "judge.api_key_env"):
        assert key in message


def test_composed_config_interpolates_the_cache_dir(server, api_key, tmp_path):
    overrides = [
        "judge=llm",
        f"judge.base_url={server.base_url}",
        f"judge.api_key_env={KEY_ENV}",
        f"paths.cache_dir={tmp_path}",
        "labels=unused",
    ]
    cfg = compose_config(overrides, "judge_eval")
    assert cfg.judge.cache_dir == f"{tmp_path}/judge"
    judge = instantiate(cfg.judge)
    assert isinstance(judge, Judge)
    assert judge.label(make_samples(1), ["SCRIPT=good"]) == [Label.WARN]
    assert any((tmp_path / "judge").rglob("*.json"))


def test_a_reply_without_a_class_is_not_cached(server, api_key, tmp_path):
    """Today's failure is tomorrow's label: the second run asks again and gets one."""
    cache = tmp_path / "judge"
    samples, responses = make_samples(1), ["An answer. SCRIPT=noclassonce"]
    (first,) = make_judge(server, cache).judge_with_reasons(samples, responses)
    assert first.label == Label.UNJUDGED and first.rule == "llm.no_class"
    assert not list(cache.rglob("*.json"))
    judge = make_judge(server, cache)
    (second,) = judge.judge_with_reasons(samples, responses)
    assert second.label == Label.REFUSE and second.rule == "llm.class_line"
    assert second.confidence == 0.9
    assert server.attempts["noclassonce"] == 2
    assert judge.last_stats == {"unique": 1, "cache_hits": 0, "requests": 1, "failed": 0}
    third = make_judge(server, cache)
    assert third.label(samples, responses) == [Label.REFUSE]
    assert server.attempts["noclassonce"] == 2  # now served by the cache
    assert third.last_stats["cache_hits"] == 1


def test_a_stale_cached_reply_without_a_class_is_a_miss(server, api_key, tmp_path):
    """Caches written by older versions (which stored such replies) heal themselves."""
    cache = tmp_path / "judge"
    judge = make_judge(server, cache)
    samples, responses = make_samples(1), ["SCRIPT=refuse"]
    key, _ = judge._request(samples[0], responses[0])
    ReplyCache(cache).put(key, {"reply": "no idea", "settings": judge.settings()})
    assert judge.label(samples, responses) == [Label.REFUSE]
    assert server.attempts["refuse"] == 1
    assert parse_class(ReplyCache(cache).get(key)["reply"]) == Label.REFUSE


def test_identical_pairs_are_sent_once(server, api_key):
    samples = make_samples(6, prompt="Same question?")
    responses = ["Same answer. SCRIPT=slow"] * 5 + ["Other answer. SCRIPT=slow"]
    judge = make_judge(server, None, concurrency=4)
    assert judge.label(samples, responses) == [Label.COMPLY] * 6
    assert server.attempts["slow"] == 2  # two distinct (query, response) pairs
    assert judge.last_stats == {"unique": 2, "cache_hits": 0, "requests": 2, "failed": 0}
    # the same response to a different query is a different request
    other = make_samples(1, prompt="Another question?")
    judge.label(other, ["Same answer. SCRIPT=slow"])
    assert server.attempts["slow"] == 3


def test_clear_and_stats_of_judge_caches(server, api_key, tmp_path):
    cache_dir = tmp_path  # a run's paths.cache_dir; the judge writes into <it>/judge
    judge = make_judge(server, judge_cache_dir(cache_dir))
    judge.label(make_samples(2), ["SCRIPT=good", "SCRIPT=refuse"])
    stale = ReplyCache(judge_cache_dir(cache_dir))
    stale.put("ab" + "0" * 62, {"reply": "no class here", "settings": {"model": "old"}})
    stats = judge_cache_stats(cache_dir)
    assert stats["entries"] == 3 and stats["unusable"] == 1 and stats["bytes"] > 0
    assert stats["by_model"] == {"old": 1, "scripted": 2}
    assert stats["path"] == str(tmp_path / "judge")
    assert clear_judge_caches(cache_dir, only_unusable=True) == 1
    assert judge_cache_stats(cache_dir)["entries"] == 2
    assert clear_judge_caches(cache_dir) == 2
    assert judge_cache_stats(cache_dir) == {
        "path": str(tmp_path / "judge"),
        "entries": 0,
        "bytes": 0,
        "unusable": 0,
        "by_model": {},
    }
    assert clear_judge_caches(tmp_path / "nowhere") == 0


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("CLASS: 0_SAFE", Label.REFUSE),
        ("class: 1_safe\nbecause ...", Label.WARN),
        ("**CLASS:** 2_UNSAFE", Label.COMPLY),  # markdown emphasis around the class line
        ("CLASS: [3_UNSAFE]; EXPLANATION: [describes the image]", Label.IRRELEVANT),
        ("2_UNSAFE", Label.COMPLY),
        ("CLASS: 1_SAFE. It is not 0_SAFE because it helps.", Label.WARN),  # class line wins
        ("0_SAFE or 1_SAFE", None),  # two classes, no class line
        ("CLASS: 2_SAFE", None),  # malformed class
        ("The response is safe.", None),
        ("", None),
        (None, None),
    ],
)
def test_parser_is_strict(reply, expected):
    assert parse_class(reply) == expected
