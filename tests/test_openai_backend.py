"""The OpenAI-compatible client against a local server started by the test (127.0.0.1, bounded, self-stopping)."""

from __future__ import annotations

import json
import time

import pytest
from synth_helpers import FakeOpenAIServer, query_of, records

from o1_embedder.data.records import RecordFile, Stage
from o1_embedder.generation.backends import GenerationRequest
from o1_embedder.generation.openai_backend import OpenAIBackend, normalize_base_url
from o1_embedder.generation.settings import GenerationSettings
from o1_embedder.synthesis.explore import ExplorationPrompt, synthesize


def request(query: str, n: int = 1, seed: int = 0) -> GenerationRequest:
    return ExplorationPrompt(num_examples=0).request(query, [], n=n, seed=seed)


def client(server, **kwargs) -> OpenAIBackend:
    kwargs.setdefault("sleep", lambda seconds: None)
    return OpenAIBackend(server.url, settings=GenerationSettings(max_new_tokens=16, temperature=0.7, top_p=0.9),
                         **kwargs)


def test_base_url_normalisation():
    assert normalize_base_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000/v1"
    assert normalize_base_url("http://127.0.0.1:8000/") == "http://127.0.0.1:8000/v1"
    assert normalize_base_url("https://host/api/v1/") == "https://host/api/v1"
    with pytest.raises(ValueError, match="http"):
        normalize_base_url("127.0.0.1:8000")


def test_many_requests_through_few_workers_stay_aligned():
    with FakeOpenAIServer(max_requests=200) as server:
        backend = client(server, concurrency=4)
        assert backend.model == "fake-model"  # discovered with GET /models
        queries = [f"query {i}" for i in range(40)]
        results = backend.generate([request(q, n=3, seed=i) for i, q in enumerate(queries)])
        backend.close()
    assert server.max_in_flight <= 4
    for i, (query, result) in enumerate(zip(queries, results)):
        assert result.ok and len(result.texts) == 3
        # each text names its own query and seed; choices came back in reverse order and are sorted by index
        assert result.texts == [f"answer to {query} (seed {i}, {k})" for k in range(3)]
        assert result.tokens == 21
    posts = [r for r in server.requests if r["path"] == "/v1/chat/completions"]
    assert len(posts) == 40
    payload = posts[0]["payload"]
    assert payload["model"] == "fake-model" and payload["n"] == 3 and payload["max_tokens"] == 16
    assert payload["temperature"] == 0.7 and payload["top_p"] == 0.9 and payload["messages"][-1]["role"] == "user"


def test_server_ignoring_n_is_asked_again_with_the_next_seed():
    with FakeOpenAIServer(ignore_n=True) as server:
        backend = client(server, model="m", concurrency=2)
        [result] = backend.generate([request("one", n=3, seed=10)])
    assert result.texts == ["answer to one (seed 10, 0)", "answer to one (seed 11, 0)", "answer to one (seed 12, 0)"]
    assert [r["payload"]["n"] for r in server.requests] == [3, 2, 1]


def test_transient_errors_are_retried_with_backoff_and_fatal_ones_are_not():
    waits = []
    with FakeOpenAIServer(fail_first=["flaky"], always_400=["bad"]) as server:
        backend = client(server, model="m", concurrency=2, max_retries=3, backoff=0.5, sleep=waits.append)
        flaky, bad, fine = backend.generate([request("flaky"), request("bad"), request("fine")])
    assert flaky.ok and flaky.texts[0].startswith("answer to flaky")
    assert fine.ok
    assert not bad.ok and "HTTP 400" in bad.error and "prompt rejected: bad" in bad.error and not bad.texts
    bad_posts = [r for r in server.requests if "payload" in r and query_of(r["payload"]["messages"]) == "bad"]
    assert len(bad_posts) == 1  # a 400 is not retried
    assert len(waits) == 1 and 0.25 <= waits[0] <= 0.5  # one backoff: 0.5 s x jitter in [0.5, 1]
    assert backend.stats["retries"] == 1


def test_unreachable_server_gives_up_after_retries_with_an_error():
    with FakeOpenAIServer() as server:
        url = server.url
    waits = []
    backend = OpenAIBackend(url, model="m", max_retries=2, backoff=1.0, max_backoff=1.5, timeout=2,
                            sleep=waits.append)
    [result] = backend.generate([request("anything")])
    assert not result.ok and "gave up after 3 tries" in result.error
    assert len(waits) == 2 and all(w <= 1.5 for w in waits)
    with pytest.raises(ConnectionError, match="cannot list the models"):
        OpenAIBackend(url, max_retries=0, timeout=2)


def test_timeouts_are_retried_then_reported():
    with FakeOpenAIServer(slow=["slow"], slow_seconds=1.5) as server:
        backend = client(server, model="m", timeout=0.3, max_retries=1)
        started = time.perf_counter()
        slow, quick = backend.generate([request("slow"), request("quick")])
        elapsed = time.perf_counter() - started
    assert quick.ok
    assert not slow.ok and "gave up after 2 tries" in slow.error
    assert elapsed < 1.4  # two 0.3 s timeouts, not the 1.5 s answers


def test_completion_endpoint_sends_the_plain_prompt_and_api_key():
    with FakeOpenAIServer(api_key="secret") as server:
        backend = client(server, model="m", endpoint="completion", api_key="secret")
        prompt = ExplorationPrompt(num_examples=0)
        [result] = backend.generate([prompt.request("wing lift", [], n=2, seed=3)])
        wrong = client(server, model="m", api_key="nope", max_retries=0)
        [denied] = wrong.generate([request("x")])
    assert result.texts == ["answer to wing lift (seed 3, 0)", "answer to wing lift (seed 3, 1)"]
    sent = server.requests[0]
    assert sent["path"] == "/v1/completions" and sent["auth"] == "Bearer secret"
    assert sent["payload"]["prompt"].endswith("Query: wing lift\nPassage:")
    assert "messages" not in sent["payload"]
    assert not denied.ok and "HTTP 401" in denied.error


def test_greedy_with_several_samples_is_refused():
    with FakeOpenAIServer() as server:
        backend = OpenAIBackend(server.url, model="m", settings=GenerationSettings(do_sample=False))
        with pytest.raises(ValueError, match="identical"):
            backend.generate([request("q", n=3)])


def test_synthesis_through_the_server_keeps_thoughts_with_their_queries(tmp_path):
    """More records than workers, a retried failure and a rejected prompt: every line has its own thoughts."""
    data = records(30)
    with FakeOpenAIServer(fail_first=["number 7 "], always_400=["number 13 "]) as server:
        backend = client(server, concurrency=3, max_retries=2)
        report = synthesize(data, backend, tmp_path / "out.jsonl", num_candidates=2, chunk_size=12,
                            prompt=ExplorationPrompt(num_examples=1), max_attempts=2)
        backend.close()
    assert report.written == 29 and list(report.failed) == ["q13"]
    assert "HTTP 400" in report.failed["q13"]
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted(r["query_id"] for r in lines) == sorted(f"q{i}" for i in range(30) if i != 13)
    for record in lines:
        assert len(record["candidates"]) == 2
        assert all(c.startswith(f"answer to {record['query']} (seed") for c in record["candidates"])
    failures = [json.loads(line) for line in (tmp_path / "out.failures.jsonl").read_text().splitlines()]
    assert [f["query_id"] for f in failures] == ["q13"]
    assert len(RecordFile(tmp_path / "out.jsonl", Stage.CANDIDATES)) == 29
