"""Test doubles for thought synthesis: a deterministic threaded backend and a local OpenAI-compatible server."""

from __future__ import annotations

import concurrent.futures
import json
import random
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from o1_embedder.generation.backends import Generation, GenerationBackend

QUERY_LINE = re.compile(r"Query: (.*)")


def query_of(messages_or_prompt) -> str:
    """The query of the last ``Query: ...`` line (chat messages or a plain prompt)."""
    text = messages_or_prompt if isinstance(messages_or_prompt, str) else messages_or_prompt[-1]["content"]
    return QUERY_LINE.findall(text)[-1].strip()


def records(n: int, negatives: bool = True) -> list[dict]:
    """Records whose query, positive and negative all name their id, so a misplaced thought shows."""
    out = []
    for i in range(n):
        record = {"query_id": f"q{i}", "query": f"query number {i} about wing lift",
                  "pos": [f"passage relevant to query {i}: the lift of wing {i}"]}
        if negatives:
            record["neg"] = [f"passage {i} about heat transfer in a slab"]
        out.append(record)
    return out


class FakeBackend(GenerationBackend):
    """Answers each request on a pool of ``workers`` threads after a random delay (completion order is
    shuffled); text ``j`` of a request is ``"thought about <query> #<j>"``.

    ``empty`` / ``fail`` name queries (by substring) that always get empty texts / an error;
    ``flaky`` names queries whose first request errors; ``calls`` records every request's query and n.
    """

    name = "fake"

    def __init__(self, workers: int = 3, delay: float = 0.003, empty=(), fail=(), flaky=(), seed: int = 0):
        super().__init__()
        self.workers, self.delay = workers, delay
        self.empty, self.fail, self.flaky = tuple(empty), tuple(fail), set(flaky)
        self.rng = random.Random(seed)
        self.calls: list[tuple[str, int, int]] = []
        self.lock = threading.Lock()

    def describe(self):
        return {"backend": "fake"}

    def _answer(self, request) -> Generation:
        query = query_of(request.messages)
        with self.lock:
            self.calls.append((query, request.n, request.seed))
            delay = self.rng.random() * self.delay
            flaky = next((f for f in self.flaky if f in query), None)
            if flaky:
                self.flaky.discard(flaky)
        time.sleep(delay)
        if flaky or any(f in query for f in self.fail):
            return Generation(error=f"simulated failure for {query}")
        if any(e in query for e in self.empty):
            return Generation(texts=["  "] * request.n)
        return Generation(texts=[f"thought about {query} #{j}" for j in range(request.n)], tokens=5 * request.n)

    def generate_iter(self, requests):
        with concurrent.futures.ThreadPoolExecutor(self.workers) as pool:
            futures = {pool.submit(self._answer, r): i for i, r in enumerate(requests)}
            for future in concurrent.futures.as_completed(futures):
                yield futures[future], future.result()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # a client that timed out closed its socket: expected
        pass


class FakeOpenAIServer:
    """A local OpenAI-compatible server on 127.0.0.1 (a random port) for tests.

    It answers ``GET /v1/models``, ``POST /v1/chat/completions`` and ``POST /v1/completions`` with texts
    that name the request's query: ``"answer to <query> (seed S, k)"``. Behaviour switches:
    ``ignore_n`` (one choice per response, like llama.cpp), ``fail_first`` (query substrings whose first
    request gets HTTP 503 with ``Retry-After: 0``), ``always_400`` (query substrings always rejected),
    ``slow`` (query substrings answered after ``slow_seconds``). It stops itself after ``max_requests``
    requests or ``lifetime`` seconds, whichever comes first, and on :meth:`stop`.
    """

    def __init__(self, *, ignore_n=False, fail_first=(), always_400=(), slow=(), slow_seconds=2.0,
                 max_requests=500, lifetime=60.0, api_key=None):
        self.ignore_n = ignore_n
        self.fail_first = set(fail_first)
        self.always_400 = tuple(always_400)
        self.slow, self.slow_seconds = tuple(slow), slow_seconds
        self.max_requests = max_requests
        self.api_key = api_key
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.rng = random.Random(0)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, code, payload, headers=None):
                body = json.dumps(payload).encode()
                if getattr(self, "counted", False):  # the answer is ready: the request no longer waits on the server
                    self.counted = False              # (counting until after the write would also count the time
                    with server.lock:                 # the client already has the answer and sends its next one)
                        server.in_flight -= 1
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                server._count({"path": self.path})
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                payload = json.loads(self.rfile.read(length))
                server._count({"path": self.path, "payload": payload,
                               "auth": self.headers.get("Authorization")})
                with server.lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                self.counted = True
                try:
                    self._answer(payload)
                finally:
                    if self.counted:  # no answer was sent (an exception)
                        self.counted = False
                        with server.lock:
                            server.in_flight -= 1

            def _answer(self, payload):
                if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    return self._send(401, {"error": {"message": "bad key"}})
                chat = self.path == "/v1/chat/completions"
                if not chat and self.path != "/v1/completions":
                    return self._send(404, {"error": {"message": "not found"}})
                query = query_of(payload["messages"] if chat else payload["prompt"])
                with server.lock:
                    first = next((f for f in server.fail_first if f in query), None)
                    if first:
                        server.fail_first.discard(first)
                    delay = server.rng.random() * 0.01
                if first:
                    return self._send(503, {"error": {"message": "warming up"}}, {"Retry-After": "0"})
                if any(s in query for s in server.always_400):
                    return self._send(400, {"error": {"message": f"prompt rejected: {query}"}})
                if any(s in query for s in server.slow):
                    delay = server.slow_seconds
                time.sleep(delay)
                n = 1 if server.ignore_n else payload.get("n", 1)
                texts = [f"answer to {query} (seed {payload.get('seed')}, {k})" for k in range(n)]
                choices = [{"index": k, "finish_reason": "stop",
                            **({"message": {"role": "assistant", "content": t}} if chat else {"text": t})}
                           for k, t in enumerate(texts)]
                self._send(200, {"id": "x", "object": "chat.completion" if chat else "text_completion",
                                 "model": payload.get("model"), "choices": list(reversed(choices)),
                                 "usage": {"completion_tokens": 7 * n}})

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.timer = threading.Timer(lifetime, self.stop)
        self.timer.daemon = True

    def _count(self, entry):
        with self.lock:
            self.requests.append(entry)
            over = len(self.requests) >= self.max_requests
        if over:
            threading.Thread(target=self.stop, daemon=True).start()

    def start(self) -> FakeOpenAIServer:
        self.thread.start()
        self.timer.start()
        return self

    def stop(self) -> None:
        with self.lock:
            if getattr(self, "_stopped", False):
                return
            self._stopped = True
        self.timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


@pytest.fixture()
def one_thread():
    """Tiny models generate fastest on one thread (and do not stall when other work shares the CPU)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
