"""The O1Embedder module: formats, special tokens, bad input, save and load."""

import os

import numpy as np
import pytest
import torch
from conftest import DOCUMENTS, QUERIES, SAMPLING, make_tokenizer
from sentence_transformers import SentenceTransformer
from transformers import AutoModelForCausalLM, AutoTokenizer

from o1_embedder import O1Embedder, build_model, load_model, save_model
from o1_embedder.model.formats import SPECIAL_TOKENS, PromptFormat


def test_special_tokens_added_once_with_mean_rows(tiny_backbone):
    lm = AutoModelForCausalLM.from_pretrained(tiny_backbone)
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone)
    old_in = lm.get_input_embeddings().weight.detach().clone()
    old_out = lm.get_output_embeddings().weight.detach().clone()
    size = len(tokenizer)
    module = O1Embedder.from_model(lm, tokenizer)
    assert len(tokenizer) == size and tokenizer.pad_token is None  # the caller's tokenizer is left as it was
    tokenizer = module.tokenizer
    ids = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)
    assert len(set(ids)) == 4 and min(ids) >= old_in.shape[0]
    new_in = module.model.get_input_embeddings().weight
    new_out = module.model.get_output_embeddings().weight
    assert torch.allclose(new_in[ids], old_in.mean(0).expand(4, -1), atol=1e-6)
    assert torch.allclose(new_out[ids], old_out.mean(0).expand(4, -1), atol=1e-6)  # untied head too
    size = len(tokenizer)
    again = O1Embedder.from_model(module.model, tokenizer)  # again: nothing added, rows untouched
    assert len(again.tokenizer) == size
    assert torch.equal(module.model.get_input_embeddings().weight[ids], new_in[ids])


def test_single_bos_and_format_tokens(tiny_model):
    builder = tiny_model[0].builder
    tok = tiny_model.tokenizer
    doc = builder.documents(["heated wings"])[0]
    assert doc[0] == tok.bos_token_id and doc.count(tok.bos_token_id) == 1 and doc[-1] == builder.emb_id
    prompt = builder.query_prompts(["heated wings"])[0]
    assert tok.convert_ids_to_tokens(prompt[1:2]) == ["<query>"]
    assert tok.convert_ids_to_tokens(prompt[-2:]) == ["</query>", "<thought>"]
    no_thought = builder.query_without_thought(["heated wings"])[0]
    assert no_thought == prompt + [builder.emb_id]


def test_long_inputs_truncate_text_not_format(tiny_model):
    builder = tiny_model[0].builder
    long = "the pressure distribution over a heated wing " * 200
    prompt = builder.query_prompts([long])[0]
    assert len(prompt) == 1 + 1 + builder.max_query_tokens + 2
    assert builder.tokenizer.convert_ids_to_tokens(prompt[-2:]) == ["</query>", "<thought>"]
    doc = builder.documents([long])[0]
    assert len(doc) == 1 + builder.max_document_tokens + 1 and doc[-1] == builder.emb_id
    emb = tiny_model.encode_document([long], convert_to_tensor=True)
    assert torch.isfinite(emb).all()


def test_bad_input_errors(tiny_model):
    with pytest.raises(TypeError, match=r"inputs\[1\] must be a str, got int"):
        tiny_model.encode_document(["ok", 3])
    with pytest.raises(TypeError, match=r"queries\[0\] must be a str, got NoneType"):
        tiny_model.encode_query([None], think=False)
    with pytest.raises(ValueError, match="num_thoughts"):
        tiny_model[0].configure(num_thoughts=0)
    with pytest.raises(ValueError, match="temperature"):
        tiny_model[0].configure(temperature=0.0)
    with pytest.raises(ValueError, match="query_template"):
        PromptFormat(query_template="no placeholder")


def test_empty_strings_embed_the_bare_format(tiny_model):
    emb = tiny_model.encode_document(["", "text"], convert_to_tensor=True)
    assert emb.shape[0] == 2 and torch.isfinite(emb).all()
    q = tiny_model.encode_query([""], convert_to_tensor=True)
    assert torch.isfinite(q).all()


def test_backbone_without_pad_token_pads_with_eos(tiny_backbone):
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone)
    assert tokenizer.pad_token is None
    module = O1Embedder.from_model(AutoModelForCausalLM.from_pretrained(tiny_backbone), tokenizer)
    assert module.tokenizer.pad_token_id == module.tokenizer.eos_token_id


def test_tokenizer_without_eos_is_rejected(tiny_backbone):
    tokenizer = make_tokenizer()
    tokenizer.eos_token = None
    with pytest.raises(ValueError, match="neither a pad_token nor an eos_token"):
        O1Embedder.from_model(AutoModelForCausalLM.from_pretrained(tiny_backbone), tokenizer)


def test_documents_are_batch_invariant(tiny_model):
    alone = tiny_model.encode_document(DOCUMENTS[:1], convert_to_tensor=True)
    batch = tiny_model.encode_document(DOCUMENTS + ["a much longer document " * 10], convert_to_tensor=True)
    assert torch.allclose(alone[0], batch[0], atol=1e-5)


def test_think_false_is_the_no_thought_format(tiny_model):
    module = tiny_model[0]
    emb = tiny_model.encode_query(QUERIES, think=False, convert_to_tensor=True)
    assert module.stats["generate_calls"] == 0
    from o1_embedder.model.encoding import embed_sequences
    with torch.no_grad():
        ref = embed_sequences(module.model, module.builder.query_without_thought(QUERIES),
                              module.tokenizer.pad_token_id)
    assert torch.allclose(emb, ref, atol=1e-5)


def test_thoughts_are_returned(tiny_model):
    embeddings, thoughts = tiny_model[0].think_and_embed(QUERIES)
    assert len(thoughts) == len(QUERIES) and all(len(row) == 2 for row in thoughts)
    assert all(isinstance(t, str) for row in thoughts for t in row)
    assert embeddings.shape[0] == len(QUERIES)


def test_save_and_load_round_trip(tiny_model, tmp_path):
    tiny_model[0].configure(num_thoughts=3, max_new_tokens=9, seed=11)
    path = save_model(tiny_model, tmp_path / "model")
    files = set(os.listdir(path))
    assert "model.safetensors" in files and "o1_embedder_config.json" in files and "modules.json" in files
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    docs = tiny_model.encode_document(DOCUMENTS)
    queries = tiny_model.encode_query(QUERIES, think=False)
    for loaded in (load_model(str(path)), SentenceTransformer(str(path), trust_remote_code=True)):
        loaded[0].thought_cache = None
        assert loaded[0].num_thoughts == 3
        assert loaded[0].generation_settings == tiny_model[0].generation_settings
        np.testing.assert_allclose(loaded.encode_document(DOCUMENTS), docs, atol=1e-6)
        np.testing.assert_allclose(loaded.encode_query(QUERIES, think=False), queries, atol=1e-6)
    with pytest.raises(ValueError, match="trust_remote_code"):
        SentenceTransformer(str(path))


def test_thinking_is_reproducible_across_loads(tiny_model, tmp_path):
    path = save_model(tiny_model, tmp_path / "model")
    a = tiny_model.encode_query(QUERIES[:2])
    b = load_model(str(path))
    b[0].thought_cache = None
    np.testing.assert_allclose(b.encode_query(QUERIES[:2]), a, atol=1e-5)


@pytest.mark.parametrize("missing", ["model.safetensors", "tokenizer.json", "o1_embedder_config.json",
                                     "modules.json"])
def test_missing_files_give_clear_errors(tiny_model, tmp_path, missing):
    path = save_model(tiny_model, tmp_path / "model")
    os.remove(path / missing)
    with pytest.raises(FileNotFoundError, match=missing.replace(".", r"\.")):
        load_model(str(path))


def test_save_is_atomic_and_overwrites(tiny_model, tmp_path):
    target = tmp_path / "model"
    save_model(tiny_model, target)
    save_model(tiny_model, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_settings_survive_in_config(tiny_backbone, tmp_path):
    model = build_model(str(tiny_backbone), num_thoughts=4, think=False, generation={**SAMPLING, "top_p": 0.5})
    path = save_model(model, tmp_path / "m")
    loaded = load_model(str(path))
    assert loaded[0].num_thoughts == 4 and loaded[0].think is False
    assert loaded[0].generation_settings.top_p == 0.5


def test_sampled_thoughts_do_not_depend_on_the_batch(tiny_model):
    module = tiny_model[0]
    _, together = module.think_and_embed(QUERIES)
    _, reversed_ = module.think_and_embed(QUERIES[::-1])
    alone = [module.think_and_embed([q])[1][0] for q in QUERIES]
    assert together == reversed_[::-1] == alone
    assert any(row[0] != row[1] for row in together)  # the K samples differ from each other
    module.configure(seed=8)
    assert module.think_and_embed(QUERIES)[1] != together


@pytest.mark.parametrize("query_weight", [0.0, 0.3])
def test_thinking_stream_gives_what_think_and_embed_gives(tiny_model, tmp_path, query_weight):
    """Queries joining a running decode (one per step, some answered by the cache, some only in part) end with
    think_and_embed's embeddings, and are stored in the cache as it stores them."""
    from o1_embedder.generation.cache import ThoughtCache
    from o1_embedder.model.thinking import cache_keys

    module = tiny_model[0]
    module.configure(query_weight=query_weight)
    queries = [*QUERIES, "drag on a body", "flutter"]
    expected, _ = module.think_and_embed(queries)
    module.thought_cache = ThoughtCache(tmp_path / "other.sqlite")
    module.think_and_embed(queries[1:2])
    (first, _), = cache_keys(module, queries[1:2], 2)
    one_sample = module.thought_cache.get_many([first])[first]
    module.thought_cache = ThoughtCache(tmp_path / "t.sqlite")
    module.think_and_embed(queries[:1])  # one query whole in the cache, one with one of its two thoughts
    module.thought_cache.put_many([(first, queries[1], 0, one_sample)])
    stream = module.thinking_stream()
    got, waiting, joined = {}, list(range(len(queries))), 0
    while waiting or stream.busy:
        if waiting:
            joined += stream.in_flight > 0
            i = waiting.pop(0)
            stream.add([queries[i]], module.builder.query_prompts([queries[i]]), [i])
        got.update(stream.step())
    assert joined >= 2
    assert torch.allclose(torch.stack([got[i] for i in range(len(queries))]), expected, atol=1e-4)
    again = module.cached_query_embeddings(queries)  # everything the stream made is in the cache
    assert all(v is not None for v in again)
    np.testing.assert_allclose(np.stack(again), expected.numpy(), atol=1e-4)


def test_int8_mode_thinks_and_keeps_caches_apart(tiny_model, tmp_path):
    from o1_embedder import ThoughtCache

    module = tiny_model[0]
    module.configure(num_thoughts=1, do_sample=False)
    before = tiny_model.encode_query(QUERIES[:2], convert_to_tensor=True, think=False)
    fingerprint = module.fingerprint()
    with pytest.warns(UserWarning, match="retrieval quality"):
        module.quantize_int8()
    assert module.fingerprint() != fingerprint
    after = tiny_model.encode_query(QUERIES[:2], convert_to_tensor=True, think=False)
    assert torch.nn.functional.cosine_similarity(before, after).min() > 0.9  # close, not equal
    module.thought_cache = ThoughtCache(tmp_path / "t.sqlite")
    thought = tiny_model.encode_query(QUERIES[:2], convert_to_tensor=True)
    assert thought.shape == before.shape and torch.isfinite(thought).all()
    with pytest.raises(ValueError, match="quantised module is not saved"):
        save_model(tiny_model, tmp_path / "q")
