"""``o1-embedder serve``: the OpenAI embeddings API on a live server (127.0.0.1, free port), driven by the official
``openai`` client: results equal ``encode_query`` / ``encode_document``, bad input gets OpenAI-shaped 4xx errors,
concurrent requests share model calls, a failing batch fails only its own requests, and shutdown answers or refuses
every accepted request."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from conftest import DOCUMENTS, SAMPLING
from conftest import QUERIES as ALL_QUERIES

QUERIES = [q for q in ALL_QUERIES if q]  # the API refuses an empty input, as OpenAI does

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from o1_embedder import ThoughtCache, build_model  # noqa: E402
from o1_embedder.cli import build_parser  # noqa: E402
from o1_embedder.serving.cli import settings_from_args  # noqa: E402
from o1_embedder.serving.server import BackgroundServer  # noqa: E402
from o1_embedder.serving.settings import ServeSettings  # noqa: E402

NAME = "tiny"
TOLERANCE = 1e-5
LIMITS = dict(max_inputs=8, max_queued=64, max_input_chars=300, max_request_bytes=8192, log_level="warning")
ERROR_FIELDS = {"message", "type", "param", "code"}


def make_model(backbone):
    """The tiny Llama with K=2 sampled thoughts (as the conftest's ``tiny_model``), thought cache off."""
    model = build_model(str(backbone), num_thoughts=2, generation=SAMPLING, max_query_tokens=16, max_document_tokens=48)
    model[0].thought_cache = None
    return model


def client(server: BackgroundServer, api_key: str = "unused", **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=api_key, max_retries=0, **kwargs)


def raw(server: BackgroundServer, method: str, path: str, body: Any = None, data: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """One HTTP request without any client-side checks: ``(status, JSON body)``."""
    if body is not None:
        data = json.dumps(body).encode()
    url = server.url.removesuffix("/v1") + path
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def vectors(response) -> np.ndarray:
    assert [d.index for d in response.data] == list(range(len(response.data)))
    return np.array([d.embedding for d in response.data], dtype=np.float32)


def assert_error(status: int, body: dict, expected_status: int, param: str | None = None) -> None:
    assert status == expected_status, body
    assert set(body) == {"error"} and set(body["error"]) == ERROR_FIELDS, body
    assert body["error"]["message"] and "Traceback" not in body["error"]["message"]
    if param is not None:
        assert body["error"]["param"] == param, body


def in_threads(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls at once, each in its own thread; each result, or the exception it raised."""
    def guarded(call):
        try:
            return call()
        except Exception as err:  # noqa: BLE001 - the test inspects it
            return err

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(guarded, calls))


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def count_calls(module, *, before: Callable[[list[str]], None] | None = None) -> list[list[str]]:
    """Wrap the module's model calls for thinking queries (``think_and_embed``, and the ``add`` of the thinking
    streams it makes): returns the list of the query batches they were called with."""
    calls: list[list[str]] = []

    def counted(call):
        def wrapped(queries, *args):
            calls.append(list(queries))
            if before is not None:
                before(list(queries))
            return call(queries, *args)
        return wrapped

    module.think_and_embed = counted(module.think_and_embed)
    make_stream = module.thinking_stream

    def thinking_stream():
        stream = make_stream()
        stream.add = counted(stream.add)
        return stream

    module.thinking_stream = thinking_stream
    return calls


@pytest.fixture(scope="module")
def served(tiny_backbone):
    """One server for the tests that do not change the model: ``(model, server)``."""
    model = make_model(tiny_backbone)
    with BackgroundServer(model, ServeSettings(**LIMITS), name=NAME) as server:
        yield model, server


# ----------------------------------------------------------------------------------------------- results
def test_float_and_base64_equal_encode(served):
    model, server = served
    c = client(server)
    expected_q = model.encode_query(QUERIES)
    expected_q0 = model.encode_query(QUERIES, think=False)
    expected_d = model.encode_document(DOCUMENTS)

    as_float = c.embeddings.create(model=NAME, input=QUERIES, encoding_format="float",
                                   extra_body={"input_type": "query"})
    assert as_float.model == NAME and as_float.object == "list" and as_float.data[0].object == "embedding"
    assert as_float.usage.prompt_tokens == as_float.usage.total_tokens > 0
    np.testing.assert_allclose(vectors(as_float), expected_q, atol=TOLERANCE)
    # the client's default: base64 on the wire, decoded by the client
    as_base64 = c.embeddings.create(model=NAME, input=QUERIES, extra_body={"input_type": "query"})
    np.testing.assert_allclose(vectors(as_base64), expected_q, atol=TOLERANCE)
    no_think = c.embeddings.create(model=NAME, input=QUERIES, extra_body={"input_type": "query", "think": False})
    np.testing.assert_allclose(vectors(no_think), expected_q0, atol=TOLERANCE)
    documents = c.embeddings.create(model=NAME, input=DOCUMENTS)  # input_type defaults to document
    np.testing.assert_allclose(vectors(documents), expected_d, atol=TOLERANCE)
    single = c.embeddings.create(model=NAME, input=DOCUMENTS[0], encoding_format="float")
    np.testing.assert_allclose(vectors(single)[0], expected_d[0], atol=TOLERANCE)

    status, body = raw(server, "POST", "/v1/embeddings", {"input": DOCUMENTS, "encoding_format": "base64"})
    assert status == 200 and body["model"] == NAME
    decoded = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in body["data"]])
    np.testing.assert_allclose(decoded, expected_d, atol=TOLERANCE)


def test_dimensions_truncate_then_normalise(served):
    model, server = served
    full = model.encode_document(DOCUMENTS)[:, :16]
    expected = full / np.linalg.norm(full, axis=1, keepdims=True)
    response = client(server).embeddings.create(model=NAME, input=DOCUMENTS, dimensions=16, encoding_format="float")
    got = vectors(response)
    assert got.shape == (len(DOCUMENTS), 16)
    np.testing.assert_allclose(got, expected, atol=TOLERANCE)


def test_models_and_health(served):
    model, server = served
    listed = client(server).models.list()
    assert [m.id for m in listed.data] == [NAME]
    assert client(server).models.retrieve(NAME).id == NAME
    status, body = raw(server, "GET", "/v1/models/other")
    assert_error(status, body, 404, "model")
    status, body = raw(server, "GET", "/health")
    assert status == 200 and body["status"] == "ok" and body["model"] == NAME
    assert body["memory"]["peak_rss_mib"] > 0


# ---------------------------------------------------------------------------------------------- bad input
BAD_BODIES = [
    ({"input": []}, 400, "input"),
    ({"input": [1, 2, 3]}, 400, "input"),                     # token ids
    ({"input": [[1, 2], [3]]}, 400, "input"),                 # token-id lists
    ({"input": 5}, 400, "input"),
    ({"input": ["ok", None]}, 400, "input"),
    ({"input": ["x"] * 9}, 400, "input"),                     # over max_inputs
    ({"input": "x" * 301}, 400, "input"),                     # over max_input_chars
    ({"input": "a\ud800b"}, 400, "input"),                   # a lone surrogate: not text
    ({"input": ""}, 400, "input"),                           # empty text: OpenAI refuses it too
    ({"input": ["ok", "  "]}, 400, "input"),
    ({}, 400, "input"),
    ({"input": "x", "model": "gpt-4"}, 404, "model"),
    ({"input": "x", "dimensions": 0}, 400, "dimensions"),
    ({"input": "x", "dimensions": 65}, 400, "dimensions"),
    ({"input": "x", "dimensions": "8"}, 400, "dimensions"),
    ({"input": "x", "encoding_format": "hex"}, 400, "encoding_format"),
    ({"input": "x", "input_type": "passage"}, 400, "input_type"),
    ({"input": "x", "think": "yes"}, 400, "think"),
    ({"input": "x", "think": True}, 400, "think"),            # documents do not think
    ({"input": "x", "input_typ": "query"}, 400, "input_typ"),  # unknown field
    ([1, 2], 400, None),                                     # not an object
]


@pytest.mark.parametrize("body, status, param", BAD_BODIES, ids=[json.dumps(b)[:40] for b, _, _ in BAD_BODIES])
def test_bad_input_gets_openai_shaped_4xx(served, body, status, param):
    _, server = served
    got_status, got = raw(server, "POST", "/v1/embeddings", body)
    assert_error(got_status, got, status, param)


def test_bad_transport_gets_openai_shaped_4xx(served):
    _, server = served
    assert_error(*raw(server, "POST", "/v1/embeddings", data=b"{not json"), 400)
    assert_error(*raw(server, "POST", "/v1/embeddings", data=b""), 400)
    status, body = raw(server, "POST", "/v1/embeddings", data=json.dumps({"input": "x" * 9000}).encode())
    assert_error(status, body, 413)
    assert body["error"]["code"] == "request_too_large"  # the same code as a chunked body over the limit
    for data in (b"\xff\xfe not utf-8", b"[" * 5_000, b'{"input": "x", "input": 1e999999}'):
        status, body = raw(server, "POST", "/v1/embeddings", data=data)
        assert_error(status, body, 400)
        assert body["error"]["code"], data[:20]  # every refusal names a code
    assert_error(*raw(server, "GET", "/v1/embeddings"), 405)
    assert_error(*raw(server, "GET", "/v1/nothing"), 404)
    # what curl -d sends: valid JSON under a form content type; the error says what to change
    status, body = raw(server, "POST", "/v1/embeddings", data=json.dumps({"input": "x"}).encode(),
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_error(status, body, 400)
    assert "Content-Type: application/json" in body["error"]["message"]


def test_client_sees_errors(served):
    _, server = served
    with pytest.raises(openai.BadRequestError) as err:
        client(server).embeddings.create(model=NAME, input=[])
    assert err.value.status_code == 400 and err.value.body["param"] == "input"
    with pytest.raises(openai.NotFoundError):
        client(server).embeddings.create(model="text-embedding-3-small", input="x")


def test_api_key(tiny_backbone):
    with BackgroundServer(make_model(tiny_backbone), ServeSettings(api_key="s3cret", **LIMITS), name=NAME) as server:
        with pytest.raises(openai.AuthenticationError):
            client(server, api_key="wrong").embeddings.create(model=NAME, input="x")
        status, body = raw(server, "POST", "/v1/embeddings", {"input": "x"})  # no header at all
        assert_error(status, body, 401)
        assert_error(*raw(server, "GET", "/v1/models"), 401)
        assert raw(server, "GET", "/health")[0] == 200  # open for load balancers
        for path in ("/docs", "/openapi.json"):  # the API's description is behind the key too
            assert raw(server, "GET", path)[0] == 401
        assert len(client(server, api_key="s3cret").embeddings.create(model=NAME, input="x").data) == 1


# ----------------------------------------------------------------------------------------------- batching
@pytest.mark.parametrize("continuous", [True, False])
def test_concurrent_requests_share_model_calls(tiny_backbone, continuous):
    model = make_model(tiny_backbone)
    module = model[0]
    calls = count_calls(module)
    queries = [f"{q} number {i}" for i, q in enumerate(["boundary layer", "heat transfer", "wing pressure",
                                                         "shock wave", "flutter", "drag", "lift", "skin friction"])]
    settings = ServeSettings(batch_window_ms=300, max_batch=32, continuous_batching=continuous, **LIMITS)
    with BackgroundServer(model, settings, name=NAME) as server:
        c = client(server)
        results = in_threads([lambda q=q: c.embeddings.create(model=NAME, input=q, encoding_format="float",
                                                              extra_body={"input_type": "query"}) for q in queries])
        documents = in_threads([lambda d=d: c.embeddings.create(model=NAME, input=d, encoding_format="float")
                                for d in DOCUMENTS])
        stats = server.service.health()["stats"]
    assert all(not isinstance(r, Exception) for r in results + documents), results + documents
    assert len(calls) < len(queries) and module.stats["generate_calls"] == len(calls)
    assert sum(map(len, calls)) == len(queries) and stats["largest_batch"] > 1
    assert stats["embed_batches"] < len(DOCUMENTS)
    for query, result in zip(queries, results):  # batched with others, the same vector as alone
        np.testing.assert_allclose(vectors(result)[0], model.encode_query([query])[0], atol=TOLERANCE)
    np.testing.assert_allclose(np.concatenate([vectors(r) for r in documents]), model.encode_document(DOCUMENTS),
                               atol=TOLERANCE)


def test_a_query_arriving_during_a_decode_joins_it(tiny_backbone):
    """Continuous batching: a query sent while another decodes starts at the next step, not after that decode."""
    model = make_model(tiny_backbone)
    module = model[0]
    holder: dict[str, Any] = {}
    make_stream = module.thinking_stream

    def thinking_stream():
        stream = make_stream()
        step = stream.step

        def first_step_waits_for_the_late_query():
            if not holder.get("waited"):
                holder["waited"] = True
                deadline = time.monotonic() + 10
                while holder["server"].service.batcher.queued == 0 and time.monotonic() < deadline:
                    time.sleep(0.01)
            return step()

        stream.step = first_step_waits_for_the_late_query
        return stream

    module.thinking_stream = thinking_stream
    with BackgroundServer(model, ServeSettings(batch_window_ms=1, **LIMITS), name=NAME) as server:
        holder["server"] = server
        c = client(server)
        ask = {"model": NAME, "encoding_format": "float", "extra_body": {"input_type": "query"}}
        first, late = in_threads([lambda: c.embeddings.create(input="boundary layer transition", **ask),
                                  lambda: (wait_until(lambda: holder.get("waited")),
                                           c.embeddings.create(input="heat transfer", **ask))[1]])
        stats = server.service.health()["stats"]
    assert not isinstance(first, Exception) and not isinstance(late, Exception), (first, late)
    assert stats["joined_running_decode"] == 1 and stats["think_batches"] == 2
    np.testing.assert_allclose(vectors(late)[0], model.encode_query(["heat transfer"])[0], atol=TOLERANCE)
    np.testing.assert_allclose(vectors(first)[0], model.encode_query(["boundary layer transition"])[0],
                               atol=TOLERANCE)


def test_cached_queries_skip_the_queue(tiny_backbone, tmp_path):
    model = make_model(tiny_backbone)
    module = model[0]
    module.thought_cache = ThoughtCache(tmp_path / "thoughts.sqlite")
    calls = count_calls(module)
    with BackgroundServer(model, ServeSettings(**LIMITS), name=NAME) as server:
        c = client(server)
        query = {"extra_body": {"input_type": "query"}, "encoding_format": "float", "model": NAME}
        first = vectors(c.embeddings.create(input=QUERIES[:2], **query))
        assert calls == [QUERIES[:2]]
        again = vectors(c.embeddings.create(input=QUERIES[:2], **query))
        assert calls == [QUERIES[:2]] and module.stats["generate_calls"] == 1  # answered from the cache
        np.testing.assert_allclose(again, first, atol=1e-6)
        mixed = vectors(c.embeddings.create(input=[QUERIES[0], QUERIES[2]], **query))
        assert calls[-1] == [QUERIES[2]]  # only the new query reached the model
        assert server.service.health()["stats"]["cache_hits"] == 3
    np.testing.assert_allclose(mixed, model.encode_query([QUERIES[0], QUERIES[2]]), atol=TOLERANCE)


# --------------------------------------------------------------------------------------- faults and limits
def test_failing_batch_fails_only_its_requests(tiny_backbone):
    model = make_model(tiny_backbone)

    def explode(queries):
        if "boom" in queries:
            raise RuntimeError("simulated model failure")

    count_calls(model[0], before=explode)
    settings = ServeSettings(batch_window_ms=100, max_batch=1, **LIMITS)
    with BackgroundServer(model, settings, name=NAME) as server:
        c = client(server)
        queries = ["boom", "heat transfer", "wing pressure"]
        results = in_threads([lambda q=q: c.embeddings.create(model=NAME, input=q, extra_body={"input_type": "query"})
                              for q in queries] + [lambda: c.embeddings.create(model=NAME, input="a document")])
        assert isinstance(results[0], openai.InternalServerError), results[0]
        assert results[0].body["code"] == "batch_failed" and "Traceback" not in results[0].body["message"]
        assert all(not isinstance(r, Exception) for r in results[1:]), results[1:]
        assert len(c.embeddings.create(model=NAME, input="pressure", extra_body={"input_type": "query"}).data) == 1


def test_a_broken_model_thread_fails_its_requests_and_turns_health_red(tiny_backbone):
    with BackgroundServer(make_model(tiny_backbone), ServeSettings(**LIMITS), name=NAME) as server:
        def broken(*_):
            raise RuntimeError("simulated scheduler bug")

        server.service.batcher._take = broken  # the thread's own loop fails, outside any batch
        c = client(server)
        with pytest.raises(openai.InternalServerError) as failed:
            c.embeddings.create(model=NAME, input="q", extra_body={"input_type": "query"})
        assert "simulated scheduler bug" in failed.value.body["message"]
        with pytest.raises(openai.APIStatusError) as refused:
            c.embeddings.create(model=NAME, input="q")
        assert refused.value.status_code == 503 and "model thread stopped" in refused.value.body["message"]
        status, report = raw(server, "GET", "/health")
        assert status == 503 and report["status"] == "broken" and "simulated" in report["error"]


def test_timeout_and_full_queue_answer_with_errors(tiny_backbone):
    model = make_model(tiny_backbone)
    release = threading.Event()
    count_calls(model[0], before=lambda queries: release.wait(10))
    settings = ServeSettings(batch_window_ms=0, max_batch=2, request_timeout_s=1.5, max_inputs=2, max_queued=2,
                             log_level="warning")
    with BackgroundServer(model, settings, name=NAME) as server:
        c = client(server)
        query = {"model": NAME, "extra_body": {"input_type": "query"}}
        with ThreadPoolExecutor(2) as pool:
            running = pool.submit(c.embeddings.create, input=["q1", "q2"], **query)  # in the model, blocked
            wait_until(lambda: server.service.batcher.in_flight == 1 and server.service.batcher.queued == 0)
            waiting = pool.submit(c.embeddings.create, input=["q3", "q4"], **query)  # fills the queue
            wait_until(lambda: server.service.batcher.queued == 2)
            with pytest.raises(openai.APIStatusError) as full:
                c.embeddings.create(input="q5", **query)
            assert full.value.status_code == 503 and full.value.body["code"] == "queue_full"
            for future in (running, waiting):
                with pytest.raises(openai.APIStatusError) as late:
                    future.result()
                assert late.value.status_code == 504 and late.value.body["code"] == "timeout"
        release.set()
        wait_until(lambda: server.service.batcher.in_flight == 0 and server.service.batcher.queued == 0)
        assert len(c.embeddings.create(input="q6", **query).data) == 1  # still serving


def test_a_client_that_leaves_takes_its_queued_texts_with_it(tiny_backbone):
    model = make_model(tiny_backbone)
    release = threading.Event()
    calls = count_calls(model[0], before=lambda queries: release.wait(10))
    settings = ServeSettings(batch_window_ms=0, max_batch=2, **LIMITS)
    with BackgroundServer(model, settings, name=NAME) as server:
        query = {"model": NAME, "extra_body": {"input_type": "query"}}
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(client(server).embeddings.create, input=["q1", "q2"], **query)
            wait_until(lambda: server.service.batcher.in_flight == 1 and server.service.batcher.queued == 0)
            with pytest.raises(openai.APITimeoutError):  # gives up while its texts wait: the connection closes
                client(server, timeout=0.5).embeddings.create(input=["q3", "q4"], **query)
            wait_until(lambda: server.service.stats["disconnected"] == 1)
            assert server.service.batcher.queued == 0
            release.set()
            assert len(running.result().data) == 2
        wait_until(lambda: server.service.batcher.in_flight == 0)
        assert calls == [["q1", "q2"]]  # the queries of the client that left never reached the model


def test_shutdown_answers_queued_requests(tiny_backbone):
    model = make_model(tiny_backbone)
    count_calls(model[0], before=lambda queries: time.sleep(0.5))
    server = BackgroundServer(model, ServeSettings(shutdown_timeout_s=10, **LIMITS), name=NAME).start()
    c = client(server)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(c.embeddings.create, model=NAME, input="q", extra_body={"input_type": "query"})
        wait_until(lambda: server.service.batcher.in_flight == 1)
        server.stop()
        assert len(pending.result().data) == 1  # accepted before shutdown: answered
    with pytest.raises(openai.APIConnectionError):  # after shutdown: nobody listens
        c.embeddings.create(model=NAME, input="q")


def test_shutdown_refuses_what_it_cannot_answer_in_time(tiny_backbone):
    model = make_model(tiny_backbone)
    count_calls(model[0], before=lambda queries: time.sleep(1.0))
    settings = ServeSettings(shutdown_timeout_s=0.2, batch_window_ms=0, max_batch=1, **LIMITS)
    server = BackgroundServer(model, settings, name=NAME).start()
    c = client(server)
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(c.embeddings.create, model=NAME, input=q, extra_body={"input_type": "query"})
                   for q in ("q1", "q2")]
        wait_until(lambda: server.service.batcher.in_flight == 2)
        started = time.monotonic()
        server.stop()
        for future in futures:
            with pytest.raises(openai.APIStatusError) as refused:
                future.result()
            assert refused.value.status_code == 503 and refused.value.body["code"] == "shutting_down"
    assert time.monotonic() - started < 5


# ------------------------------------------------------------------------------------------- command line
def test_serve_options_come_from_the_settings(monkeypatch):
    monkeypatch.setenv("O1_EMBEDDER_API_KEY", "from-env")
    args = build_parser().parse_args(["serve", "my-model", "--max-batch", "4", "--batch-window-ms", "2.5",
                                      "--greedy", "--default-input-type", "query"])
    settings = settings_from_args(args)
    assert args.model == "my-model" and settings.max_batch == 4 and settings.batch_window_ms == 2.5
    assert settings.greedy and settings.default_input_type == "query" and settings.api_key == "from-env"
    assert settings.port == ServeSettings().port and "from-env" not in repr(settings)
    args = build_parser().parse_args(["serve", "m", "--api-key", "given"])
    assert settings_from_args(args).api_key == "given"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "m", "--default-input-type", "passage"])
    with pytest.raises(ValueError, match="max_queued"):
        ServeSettings(max_inputs=10, max_queued=5)
    monkeypatch.setenv("O1_EMBEDDER_API_KEY", "")  # set but empty: refused as --api-key "" is, never "no key"
    with pytest.raises(ValueError, match="api_key"):
        settings_from_args(build_parser().parse_args(["serve", "m"]))


@pytest.mark.parametrize("changes, message", [
    ({"api_key": ""}, "api_key"), ({"api_key": "  "}, "api_key"), ({"api_key": " key "}, "api_key"),
    ({"batch_window_ms": float("inf")}, "batch_window_ms.*finite"),
    ({"batch_window_ms": float("nan")}, "batch_window_ms.*finite"),
    ({"shutdown_timeout_s": float("inf")}, "shutdown_timeout_s.*finite"),
    ({"request_timeout_s": float("nan")}, "request_timeout_s.*finite"),
    ({"query_weight": 1.5}, "query_weight"), ({"query_weight": float("nan")}, "query_weight"),
])
def test_settings_refuse_keys_that_open_the_door_and_endless_waits(changes, message):
    with pytest.raises(ValueError, match=message):
        ServeSettings(**changes)


def test_non_finite_vectors_are_a_500_never_a_200_with_nan():
    from o1_embedder.serving.errors import ApiError
    from o1_embedder.serving.schemas import EmbeddingCall, render_embeddings

    vectors = np.ones((3, 4), dtype=np.float32)
    call = EmbeddingCall(texts=["a", "b", "c"], input_type="query", think=False, dimensions=None,
                         encoding_format="float")
    assert json.loads(render_embeddings(vectors, call, NAME, 3))["data"][2]["embedding"] == [1.0] * 4
    vectors[1, 2] = np.nan
    with pytest.raises(ApiError) as err:
        render_embeddings(vectors, call, NAME, 3)
    assert err.value.status == 500 and "input[1]" in err.value.message
