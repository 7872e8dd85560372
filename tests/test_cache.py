"""The persistent thought cache."""

import multiprocessing
import os
import threading

import numpy as np
import torch
from conftest import QUERIES

from o1_embedder import ThoughtCache
from o1_embedder.generation.cache import CachedThought
from o1_embedder.model.thinking import cache_keys


def test_repeated_encode_query_generates_nothing(tiny_model, tmp_path):
    module = tiny_model[0]
    module.thought_cache = ThoughtCache(tmp_path / "t.sqlite")
    first = tiny_model.encode_query(QUERIES)
    calls = module.stats["generate_calls"]
    assert calls >= 1 and len(module.thought_cache) == 2 * len(QUERIES)
    second = tiny_model.encode_query(QUERIES)
    assert module.stats["generate_calls"] == calls  # nothing generated the second time
    np.testing.assert_allclose(first, second, atol=1e-4)
    # A new query among known ones: only it is generated.
    tiny_model.encode_query(QUERIES + ["a new query about shock waves"])
    assert module.stats["generate_calls"] == calls + 1
    assert module.stats["thoughts_generated"] == 2 * len(QUERIES) + 2


def test_key_covers_settings_and_weights(tiny_model, tmp_path):
    module = tiny_model[0]
    module.thought_cache = ThoughtCache(tmp_path / "t.sqlite")
    tiny_model.encode_query(QUERIES[:2])
    generated = module.stats["thoughts_generated"]
    module.configure(seed=123)  # new seed: new thoughts
    tiny_model.encode_query(QUERIES[:2])
    assert module.stats["thoughts_generated"] == generated + 4
    module.configure(num_thoughts=3)  # samples 0 and 1 are known, sample 2 is new
    tiny_model.encode_query(QUERIES[:2])
    assert module.stats["thoughts_generated"] == generated + 4 + 2
    with torch.no_grad():  # changed weights: new fingerprint, new thoughts
        module.model.get_input_embeddings().weight[5] += 1.0
    tiny_model.encode_query(QUERIES[:2])
    assert module.stats["thoughts_generated"] == generated + 4 + 2 + 6


def test_cache_off_switch(tiny_model, monkeypatch):
    monkeypatch.setenv("O1_EMBEDDER_THOUGHT_CACHE", "off")
    assert ThoughtCache.from_env() is None
    module = tiny_model[0]
    module.use_thought_cache, module._thought_cache = True, None
    assert module.thought_cache is None
    tiny_model.encode_query(QUERIES[:1])
    tiny_model.encode_query(QUERIES[:1])
    assert module.stats["generate_calls"] == 2


def test_cache_location_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("O1_EMBEDDER_THOUGHT_CACHE", str(tmp_path / "sub" / "c.sqlite"))
    cache = ThoughtCache.from_env()
    assert cache.path == tmp_path / "sub" / "c.sqlite" and cache.path.exists()


def _reader(path, keys, out):
    cache = ThoughtCache(path)
    for _ in range(20):
        got = cache.get_many(keys)
        out.put(len(got))


def test_concurrent_readers_and_a_writer(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = ThoughtCache(path)
    keys = [f"k{i}" for i in range(50)]
    cache.put_many([(k, "q", 0, CachedThought(f"thought {k}", [1, 2, 3])) for k in keys])
    queue = multiprocessing.get_context("spawn").Queue()
    procs = [multiprocessing.get_context("spawn").Process(target=_reader, args=(path, keys, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    errors = []

    def writer():
        try:
            for i in range(20):
                ThoughtCache(path).put_many([(f"w{i}", "q", 0, CachedThought("w", [i]))])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=lambda: [cache.get_many(keys) for _ in range(20)]) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = [queue.get(timeout=600) for _ in range(40)]  # generous: a busy machine starts spawned processes slowly
    for p in procs:
        p.join(timeout=600)
        assert p.exitcode == 0
    assert not errors and set(counts) == {50}
    assert len(cache) == 70
    assert cache.get_many(["k3"])["k3"] == CachedThought("thought k3", [1, 2, 3])
    assert os.path.getsize(path) > 0


def test_thought_without_embedding_is_embedded_in_one_pass(tiny_model, tmp_path):
    """A thought stored by someone else (text + ids, no vector) is used as is: no generation."""
    from o1_embedder.model.encoding import embed_sequences

    module = tiny_model[0]
    module.configure(num_thoughts=1, do_sample=False)
    module.thought_cache = ThoughtCache(tmp_path / "t.sqlite")
    thought_ids = module.tokenizer("the boundary layer separates", add_special_tokens=False)["input_ids"]
    key = cache_keys(module, ["what is separation"], 1)[0][0]
    module.thought_cache.put_many([(key, "what is separation", 0, CachedThought("x", thought_ids))])
    emb = tiny_model.encode_query(["what is separation"], convert_to_tensor=True)
    assert module.stats["generate_calls"] == 0 and module.stats["thoughts_from_cache"] == 1
    prompt = module.builder.query_prompts(["what is separation"])[0]
    with torch.no_grad():
        ref = embed_sequences(module.model, [module.builder.close_thought(prompt, thought_ids)],
                              module.tokenizer.pad_token_id)
    assert torch.allclose(emb, ref, atol=1e-5)


def test_fingerprint_sees_a_single_element(tiny_model):
    module = tiny_model[0]
    before = module.fingerprint()
    assert module.fingerprint() == before
    with torch.no_grad():
        module.model.get_output_embeddings().weight[3, 7] += 1e-3
    assert module.fingerprint() != before


def test_fingerprint_does_not_depend_on_the_thread_count(tiny_model):
    # caches keyed by the fingerprint must hit in a process with another thread count (a server, a test run
    # with OMP_NUM_THREADS=1): a float32 sum over millions of elements differs in its last bits between 1 and 2
    module = tiny_model[0]
    module.model.register_parameter("large", torch.nn.Parameter(torch.randn(4_000_000,
                                                                            generator=torch.Generator().manual_seed(0))))
    threads = torch.get_num_threads()
    seen = set()
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            module._fingerprint = None
            seen.add(module.fingerprint())
    finally:
        torch.set_num_threads(threads)
    assert len(seen) == 1


def test_nan_rows_are_misses_and_generated_again(tiny_model, tmp_path):
    import sqlite3

    module = tiny_model[0]
    path = tmp_path / "t.sqlite"
    module.thought_cache = ThoughtCache(path)
    first = tiny_model.encode_query(QUERIES[:2])
    with sqlite3.connect(path) as conn:  # poison every stored embedding
        dim = first.shape[1]
        conn.execute("UPDATE thoughts SET embedding = ?", (np.full(dim, np.nan, dtype=np.float32).tobytes(),))
    module.thought_cache = ThoughtCache(path)  # a fresh process: nothing in memory
    calls = module.stats["thoughts_generated"]
    again = tiny_model.encode_query(QUERIES[:2])
    assert np.isfinite(again).all()
    assert module.stats["thoughts_generated"] > calls  # the NaN rows were generated again, not served
    np.testing.assert_allclose(first, again, atol=1e-4)
