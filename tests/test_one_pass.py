"""One pass: the query embedding read from generation's KV cache equals re-encoding the same ids."""

import pytest
import torch
import torch.nn.functional as F
from conftest import QUERIES, SAMPLING

from o1_embedder import build_model
from o1_embedder.model.encoding import GenerationSettings, embed_sequences, think_and_embed
from o1_embedder.model.thinking import cache_keys


@pytest.mark.parametrize("backbone", ["tiny_backbone", "tiny_qwen_backbone"])
def test_one_pass_equals_two_pass(backbone, request):
    module = build_model(str(request.getfixturevalue(backbone)), max_query_tokens=16)[0]
    prompts = module.builder.query_prompts(QUERIES) * 3  # K=3 samples per query, left-padded in one batch
    result = think_and_embed(module.model, prompts, settings=GenerationSettings(**SAMPLING),
                             pad_id=module.tokenizer.pad_token_id, eos_id=module.builder.eos_id,
                             emb_id=module.builder.emb_id, suppress_ids=module.special_token_ids,
                             row_seeds=list(range(len(prompts))))
    lengths = [len(t) for t in result.thought_ids]
    assert len(set(lengths)) >= 2, f"thoughts should differ in length for this test to mean anything: {lengths}"
    assert min(lengths) < SAMPLING["max_new_tokens"] and max(lengths) == SAMPLING["max_new_tokens"]
    assert all(module.builder.eos_id not in t for t in result.thought_ids)
    full = [module.builder.close_thought(p, t) for p, t in zip(prompts, result.thought_ids)]
    two_pass = embed_sequences(module.model, full, module.tokenizer.pad_token_id)
    assert torch.allclose(result.embeddings, two_pass, atol=1e-4)
    # generated tokens: the thought plus its eos for finished rows
    assert result.generated_tokens == sum(min(n + 1, SAMPLING["max_new_tokens"]) for n in lengths)


def test_encode_query_k_thoughts_matches_cached_two_pass(tiny_model, tmp_path):
    """K=2: generated (one pass) and cached (re-encoded from the stored ids) embeddings agree."""
    from o1_embedder import ThoughtCache

    module = tiny_model[0]
    module.thought_cache = ThoughtCache(tmp_path / "t.sqlite")
    first = tiny_model.encode_query(QUERIES, convert_to_tensor=True)
    assert module.stats["thoughts_generated"] == 2 * len(QUERIES) and module.stats["thoughts_from_cache"] == 0
    second = tiny_model.encode_query(QUERIES, convert_to_tensor=True)
    assert module.stats["thoughts_from_cache"] == 2 * len(QUERIES) and module.stats["generate_calls"] == 1
    assert first.shape == (len(QUERIES), module.get_embedding_dimension())
    assert torch.allclose(first.norm(dim=-1), torch.ones(len(QUERIES)), atol=1e-5)
    assert torch.allclose(first, second, atol=1e-4)
    # The average of K normalised vectors, re-normalised: check against the per-sample vectors.
    with torch.no_grad():
        prompts = module.builder.query_prompts(QUERIES)
        keys = cache_keys(module, QUERIES, 2)
        stored = module.thought_cache.get_many([k for row in keys for k in row])
        for i, prompt in enumerate(prompts):
            seqs = [module.builder.close_thought(prompt, stored[k].token_ids) for k in keys[i]]
            vecs = embed_sequences(module.model, seqs, module.tokenizer.pad_token_id)
            assert torch.allclose(F.normalize(vecs.mean(0), dim=-1), first[i], atol=1e-4)


def test_query_weight_mixes_the_querys_own_embedding_read_in_the_prefill(tiny_model, tmp_path):
    from o1_embedder import ThoughtCache

    module = tiny_model[0]
    thinking = tiny_model.encode_query(QUERIES, convert_to_tensor=True)  # query_weight 0: thoughts only
    own = tiny_model.encode_query(QUERIES, convert_to_tensor=True, think=False)
    module.configure(query_weight=0.25)
    mixed = tiny_model.encode_query(QUERIES, convert_to_tensor=True)
    assert torch.allclose(mixed, F.normalize(0.75 * thinking + 0.25 * own, dim=-1), atol=1e-5)
    assert not torch.allclose(mixed, thinking, atol=1e-3)

    # the same through the thought cache: filled on the first call, then answered from it, model-free too
    module.thought_cache = ThoughtCache(tmp_path / "t.sqlite")
    first = tiny_model.encode_query(QUERIES, convert_to_tensor=True)
    generated = module.stats["thoughts_generated"]
    again = tiny_model.encode_query(QUERIES, convert_to_tensor=True)
    assert module.stats["thoughts_generated"] == generated
    assert torch.allclose(first, mixed, atol=1e-5) and torch.allclose(again, mixed, atol=1e-5)
    cached = torch.from_numpy(__import__("numpy").stack(module.cached_query_embeddings(QUERIES)))
    assert torch.allclose(cached, mixed, atol=1e-5)
    # thoughts cached before the weight was set: the own embeddings come from one forward pass
    module.configure(query_weight=0.5)
    module.thought_cache.clear()
    module.configure(query_weight=0.0)
    tiny_model.encode_query(QUERIES)
    module.configure(query_weight=0.5)
    assert torch.allclose(tiny_model.encode_query(QUERIES, convert_to_tensor=True),
                          F.normalize(0.5 * thinking + 0.5 * own, dim=-1), atol=1e-5)
    for bad in (-0.1, 1.5, float("nan"), True, "0.5"):
        with pytest.raises((TypeError, ValueError), match="query_weight"):
            module.configure(query_weight=bad)
    assert module.apply_overrides(query_weight=0.2).query_weight == 0.2  # what eval and serve's option call
    assert module.apply_overrides().query_weight == 0.2
