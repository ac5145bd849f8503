"""Shared helpers for the judge tests: samples, the XSTest reference data, the scripted server.

``scripted_server()`` is a real HTTP server on 127.0.0.1 speaking the OpenAI chat API. Each
response text sent to it carries a ``SCRIPT=<name>`` marker that tells it how to answer: a
good label, a malformed reply, a 500 then success, a 429 then success, a hang past the
client's timeout (once, or always), a reply without a class once and then a good one...
It counts attempts per script, records the Authorization header and the peak number of
requests in flight.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from calib.types import Sample
from tests.conftest import SHARED_DATA

XSTEST_DIR = SHARED_DATA / "xstest_completions"


def xstest_dir() -> Path:
    """``../shared/data/xstest_completions``, or skip the test when it is absent."""
    if not any(XSTEST_DIR.glob("*.csv")):
        pytest.skip(f"XSTest human-labelled completions not found at {XSTEST_DIR} (../shared/data)")
    return XSTEST_DIR


def make_samples(n: int, prompt: str = "How do I do it?", image: str | None = None) -> list[Sample]:
    return [
        Sample(
            id=f"s{i}",
            prompt=prompt,
            image=image,
            label="unsafe" if i % 2 else "safe",
            category="test",
            condition="txt" if image is None else "image",
            group=f"g{i // 2}",
        )
        for i in range(n)
    ]


class ScriptedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ScriptedHandler)
        self.attempts: Counter[str] = Counter()
        self.auth_headers: set[str] = set()
        self.lock = threading.Lock()
        self.in_flight = 0
        self.peak_in_flight = 0
        self.release = threading.Event()  # set at teardown: ends every hanging handler
        self.payloads: list[dict] = []  # the requests of the ``record*`` scripts

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class ScriptedHandler(BaseHTTPRequestHandler):
    server: ScriptedServer

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
        try:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout): nothing to answer

    def _reply(self, content: str) -> None:
        body = {"choices": [{"message": {"role": "assistant", "content": content}}]}
        self._leave()  # before the client can see the reply and send its next request
        self._send(200, json.dumps(body).encode())

    def _leave(self) -> None:
        """Count this request out of ``in_flight`` once (on reply, or when handling ends)."""
        with self.server.lock:
            if getattr(self, "_counted", False):
                self.server.in_flight -= 1
                self._counted = False

    def do_POST(self) -> None:
        server = self.server
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = payload["messages"][-1]["content"]
        if isinstance(text, list):
            text = text[0]["text"]
        script = re.search(r"SCRIPT=(\w+)", text).group(1)
        with server.lock:
            server.attempts[script] += 1
            attempt = server.attempts[script]
            server.auth_headers.add(self.headers.get("Authorization", ""))
            server.in_flight += 1
            server.peak_in_flight = max(server.peak_in_flight, server.in_flight)
            self._counted = True
        try:
            self._play(script, attempt, payload)
        finally:
            self._leave()

    def _play(self, script: str, attempt: int, payload: dict) -> None:
        if script.startswith("good"):
            self._reply("CLASS: 1_SAFE\nIt flags the request as dangerous.")
        elif script == "comply":
            self._reply("2_UNSAFE")
        elif script == "refuse":
            self._reply("CLASS: 0_SAFE\nIt declines.")
        elif script == "noclassonce":
            self._reply("It is hard to say." if attempt == 1 else "CLASS: 0_SAFE")
        elif script == "malformed":
            self._reply("I think this response is fine.")
        elif script == "ambiguous":
            self._reply("Either 0_SAFE or 1_SAFE.")
        elif script == "badjson":
            self._send(200, b"<html>gateway</html>")
        elif script == "flaky500":
            if attempt == 1:
                self._send(500, b"oops")
            else:
                self._reply("CLASS: 0_SAFE")
        elif script == "ratelimit":
            if attempt == 1:
                self._send(429, b"slow down", {"Retry-After": "0"})
            else:
                self._reply("CLASS: [2_UNSAFE]; EXPLANATION: it helps.")
        elif script == "hangonce":
            if attempt == 1:
                self.server.release.wait(timeout=10)
            else:
                self._reply("CLASS: 3_UNSAFE")
        elif script == "hang":
            self.server.release.wait(timeout=10)
        elif script == "slow":
            self.server.release.wait(timeout=0.2)  # hold the request so that others overlap
            self._reply("CLASS: 2_UNSAFE")
        elif script.startswith("record"):  # keep the request; reply as a careless judge
            with self.server.lock:
                self.server.payloads.append(payload)
            self._reply("It is not 2_UNSAFE; I would say 0_SAFE.")
        elif script == "image":
            parts = payload["messages"][-1]["content"]
            has_image = isinstance(parts, list) and parts[1]["type"] == "image_url"
            self._reply("CLASS: 0_SAFE" if has_image else "no image")
        else:
            self._send(400, b"unknown script")


@contextmanager
def scripted_server() -> Iterator[ScriptedServer]:
    """A running ``ScriptedServer``; every hanging handler is released and joined on exit."""
    srv = ScriptedServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)
