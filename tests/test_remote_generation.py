"""Thoughts from an OpenAI-compatible completions server (``serve --generation-url``): the same vectors as the
in-process path when the server writes the thought the local model would, and its faults as 502 / 504 answers."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from conftest import QUERIES, SAMPLING

from o1_embedder import build_model
from o1_embedder.generation import GenerationSettings, decode
from o1_embedder.generation.remote import CompletionsThoughtWriter, GenerationServerError
from o1_embedder.generation.settings import row_seed

TEXTS = [q for q in QUERIES if q]


def make_model(backbone):
    model = build_model(str(backbone), num_thoughts=2, generation=SAMPLING, max_query_tokens=16,
                        max_document_tokens=48)
    model[0].thought_cache = None
    return model


class FakeCompletions:
    """``/v1/completions`` written by a local copy of the model with the request's settings and seed (the thought
    the in-process path writes) with its token ids as vLLM lists them, or only its text (``mode`` "text"), or a
    fault: "error" (HTTP 500), "slow" (answers after ``delay`` s), "garbage" (JSON without choices)."""

    def __init__(self, module, mode="ok", delay=5.0):
        self.module, self.mode, self.delay = module, mode, delay
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code, payload):
                body = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:  # the client gave up (a timeout test)
                    pass

            def do_GET(self):
                self._send(200, {"object": "list", "data": [{"id": "same-weights", "object": "model"}]})

            def do_POST(self):
                payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with fake.lock:
                    fake.requests.append(payload)
                if fake.mode == "error":
                    return self._send(500, {"error": {"message": "out of memory"}})
                if fake.mode == "garbage":
                    return self._send(200, {"unexpected": True})
                if fake.mode == "slow":
                    time.sleep(fake.delay)
                ids = fake.write(payload)
                choice = {"index": 0, "text": fake.module.tokenizer.decode(ids, skip_special_tokens=True),
                          "finish_reason": "stop"}
                if payload.get("return_tokens_as_token_ids") and fake.mode != "text":  # as vLLM answers
                    choice["logprobs"] = {"tokens": [f"token_id:{i}" for i in ids + [fake.module.builder.eos_id]]}
                self._send(200, {"choices": [choice]})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def write(self, payload):
        module = self.module
        temperature = payload["temperature"]
        settings = GenerationSettings(do_sample=temperature > 0, temperature=temperature or 1.0,
                                      top_p=payload["top_p"], max_new_tokens=payload["max_tokens"])
        with self.lock, torch.no_grad():
            out = decode(module.model, [payload["prompt"]], settings=settings, pad_id=module.tokenizer.pad_token_id,
                         eos_ids=[module.builder.eos_id], emb_id=module.builder.emb_id,
                         suppress_ids=[int(k) for k in payload.get("logit_bias", {})], row_seeds=[payload["seed"]])
        return out.token_ids[0]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def fake(tiny_backbone):
    servers = []

    def start(mode="ok", delay=5.0):
        servers.append(FakeCompletions(make_model(tiny_backbone)[0], mode, delay))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def test_thoughts_from_a_server_give_the_in_process_vectors(tiny_backbone, fake):
    local = make_model(tiny_backbone)
    expected = local.encode_query(TEXTS, convert_to_tensor=True)
    _, local_thoughts = local[0].think_and_embed(TEXTS)
    server = fake()
    remote = make_model(tiny_backbone)
    remote[0].thought_writer = CompletionsThoughtWriter(server.url, timeout_s=30)
    assert remote[0].thought_writer.model == "same-weights"  # from GET /models
    got = remote.encode_query(TEXTS, convert_to_tensor=True)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)  # one pass vs read from the KV cache
    _, remote_thoughts = remote[0].think_and_embed(TEXTS)
    assert remote_thoughts == local_thoughts
    module = remote[0]
    first = server.requests[0]
    sent = sorted(tuple(r["prompt"]) for r in server.requests[:2 * len(TEXTS)])
    assert sent == sorted(tuple(p) for p in module.builder.query_prompts(TEXTS) * 2)  # token ids: the exact sequences
    assert first["max_tokens"] == SAMPLING["max_new_tokens"] and first["temperature"] == SAMPLING["temperature"]
    assert {int(k) for k in first["logit_bias"]} == set(module.special_token_ids)
    seeds = sorted(r["seed"] for r in server.requests[:2 * len(TEXTS)])
    assert seeds == sorted(row_seed(SAMPLING["seed"], q, str(k)) for q in TEXTS for k in range(2))
    assert module.stats["generate_calls"] == 0  # the local decoding loop never ran
    documents = remote.encode_document(["a wing"], convert_to_tensor=True)  # documents never ask the server
    assert documents.shape[0] == 1 and len(server.requests) == 4 * len(TEXTS)


def test_a_server_without_token_ids_gives_text_tokenised_again(tiny_backbone, fake):
    server = fake("text")
    model = make_model(tiny_backbone)
    model[0].thought_writer = writer = CompletionsThoughtWriter(server.url, timeout_s=30)
    written = writer.write(model[0].builder.query_prompts(TEXTS[:1]), [1], model[0].generation_settings)
    assert written[0][1] is None and isinstance(written[0][0], str)
    _, thoughts = model[0].think_and_embed(TEXTS[:1])
    assert len(thoughts[0]) == 2 and model[0].stats["thoughts_generated"] == 2


def test_generation_server_faults_are_named_and_bounded(tiny_backbone, fake):
    model = make_model(tiny_backbone)
    for mode, status in (("error", 502), ("garbage", 502)):
        model[0].thought_writer = CompletionsThoughtWriter(fake(mode).url, timeout_s=30)
        with pytest.raises(GenerationServerError, match="generation server") as err:
            model.encode_query(TEXTS[:1])
        assert err.value.status == status
    model[0].thought_writer = CompletionsThoughtWriter(fake("slow", delay=5.0).url, timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(GenerationServerError, match="deadline") as err:
        model.encode_query(TEXTS[:1])
    assert err.value.status == 504 and err.value.code == "generation_timeout"
    assert time.monotonic() - started < 5.0  # the deadline, not the server, ended the wait
    with pytest.raises(GenerationServerError, match="unreachable"):
        CompletionsThoughtWriter("http://127.0.0.1:9/v1", timeout_s=5)


def test_serve_with_a_generation_url(tiny_backbone, fake):
    openai = pytest.importorskip("openai")
    pytest.importorskip("fastapi")
    from o1_embedder.serving.server import BackgroundServer
    from o1_embedder.serving.settings import ServeSettings

    local = make_model(tiny_backbone)
    expected = local.encode_query(TEXTS)
    settings = ServeSettings(generation_url=fake().url, thought_cache="off", log_level="warning")
    with BackgroundServer(make_model(tiny_backbone), settings, "tiny") as server:
        client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)
        got = client.embeddings.create(model="tiny", input=TEXTS, encoding_format="float",
                                       extra_body={"input_type": "query"})
        np.testing.assert_allclose(np.array([d.embedding for d in got.data]), expected, atol=1e-4)
    for mode, status, code, timeout in (("error", 502, "generation_server_error", 30.0),
                                        ("slow", 504, "generation_timeout", 0.5)):
        settings = ServeSettings(generation_url=fake(mode, delay=5.0).url, thought_cache="off", log_level="critical",
                                 generation_timeout_s=timeout)
        with BackgroundServer(make_model(tiny_backbone), settings, "tiny") as server:
            client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)
            with pytest.raises(openai.APIStatusError) as err:
                client.embeddings.create(model="tiny", input=TEXTS[:1], extra_body={"input_type": "query"})
            assert err.value.status_code == status and err.value.body["code"] == code
            assert "generation server" in err.value.body["message"]


def test_generation_settings_are_checked():
    from o1_embedder.serving.settings import ServeSettings

    with pytest.raises(ValueError, match="generation_url"):
        ServeSettings(generation_url="not a url")
    with pytest.raises(ValueError, match="generation_model.*needs 'generation_url'"):
        ServeSettings(generation_model="m")
    with pytest.raises(ValueError, match="generation_timeout_s"):
        ServeSettings(generation_url="http://127.0.0.1:8001", generation_timeout_s=0)
