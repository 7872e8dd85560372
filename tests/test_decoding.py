"""The decoding loop against transformers' ``generate``: same thoughts for the same seeds, whatever the batch."""

import pytest
import torch
from conftest import QUERIES, SAMPLING
from helpers import reference

from o1_embedder import build_model
from o1_embedder.generation import GenerationSettings, decode
from o1_embedder.model.encoding import embed_sequences


@pytest.mark.parametrize("backbone", ["tiny_backbone", "tiny_qwen_backbone"])
@pytest.mark.parametrize("sampling", [True, False])
def test_decode_equals_generate_and_reencoding(backbone, sampling, request):
    module = build_model(str(request.getfixturevalue(backbone)), max_query_tokens=16)[0]
    settings = GenerationSettings(**{**SAMPLING, "do_sample": sampling})
    prompts = module.builder.query_prompts(QUERIES) * 3  # repeated prompts share a prefill
    seeds = list(range(len(prompts)))
    ids = dict(pad_id=module.tokenizer.pad_token_id, suppress_ids=module.special_token_ids)
    out = decode(module.model, prompts, settings=settings, eos_ids=[module.builder.eos_id], row_seeds=seeds,
                 emb_id=module.builder.emb_id, **ids)
    expected, finished = reference(module.model, prompts, settings, ids["pad_id"], module.builder.eos_id,
                         module.special_token_ids, seeds)
    assert out.token_ids == expected
    lengths = [len(t) for t in out.token_ids]
    if sampling:
        assert len(set(lengths)) >= 2 and max(lengths) == settings.max_new_tokens
    assert out.finished == finished
    assert out.generated_tokens == sum(n + f for n, f in zip(lengths, finished))
    full = [module.builder.close_thought(p, t) for p, t in zip(prompts, out.token_ids)]
    assert torch.allclose(out.embeddings, embed_sequences(module.model, full, ids["pad_id"]), atol=1e-4)
    # Without an embedding the same thoughts, and each row independent of its batch.
    plain = decode(module.model, prompts, settings=settings, eos_ids=[module.builder.eos_id], row_seeds=seeds, **ids)
    assert plain.token_ids == out.token_ids and plain.embeddings is None
    alone = decode(module.model, prompts[5:6], settings=settings, eos_ids=[module.builder.eos_id],
                   row_seeds=seeds[5:6], **ids)
    assert alone.token_ids == out.token_ids[5:6]
    # The query's own embedding read in the prefill (<emb> appended, then cropped): same thoughts, same thought
    # embeddings, and the own embedding equals encoding prompt + <emb>.
    both = decode(module.model, prompts, settings=settings, eos_ids=[module.builder.eos_id], row_seeds=seeds,
                  emb_id=module.builder.emb_id, prompt_embeddings=True, **ids)
    assert both.token_ids == out.token_ids and torch.allclose(both.embeddings, out.embeddings, atol=1e-5)
    own = embed_sequences(module.model, [p + [module.builder.emb_id] for p in prompts], ids["pad_id"])
    assert both.prompt_embeddings.shape == own.shape and torch.allclose(both.prompt_embeddings, own, atol=1e-5)


def test_finished_rows_leave_the_batch(tiny_backbone):
    """Rows that end early stop costing decoding work: fewer token-rows are fed than batch x steps."""
    module = build_model(str(tiny_backbone), max_query_tokens=16)[0]
    settings = GenerationSettings(**SAMPLING)
    prompts = module.builder.query_prompts(QUERIES) * 4
    fed = []
    handle = module.model.get_decoder().register_forward_hook(
        lambda mod, args, kwargs, out: fed.append(kwargs["input_ids"].shape), with_kwargs=True)
    try:
        out = decode(module.model, prompts, settings=settings, pad_id=module.tokenizer.pad_token_id,
                     eos_ids=[module.builder.eos_id], row_seeds=list(range(len(prompts))), emb_id=module.builder.emb_id)
    finally:
        handle.remove()
    assert fed[0] == (len(QUERIES), max(len(p) for p in prompts[:len(QUERIES)]))  # one prefill per distinct prompt
    steps = fed[1:]
    assert len(steps) == out.steps and all(shape[1] == 1 for shape in steps)
    assert sum(shape[0] for shape in steps) < len(prompts) * len(steps)  # rows dropped as they end


def test_decode_checks_its_input(tiny_backbone):
    module = build_model(str(tiny_backbone))[0]
    with pytest.raises(ValueError, match="one seed per row"):
        decode(module.model, [[1, 2]], settings=GenerationSettings(), pad_id=0, eos_ids=[2])
    with pytest.raises(ValueError, match="at least one token"):
        decode(module.model, [[]], settings=GenerationSettings(do_sample=False), pad_id=0, eos_ids=[2])
    assert decode(module.model, [], settings=GenerationSettings(), pad_id=0, eos_ids=[2]).token_ids == []


@pytest.mark.parametrize("bad, message", [({"do_sample": "no"}, "do_sample"),
                                          ({"max_new_tokens": 2.5}, "max_new_tokens"),
                                          ({"max_new_tokens": "3"}, "max_new_tokens"), ({"seed": 1.0}, "seed"),
                                          ({"temperature": True}, "temperature")])
def test_settings_types_are_checked(bad, message):
    with pytest.raises(TypeError, match=message):
        GenerationSettings(**bad)
    with pytest.raises(ValueError, match="unknown generation setting"):
        GenerationSettings.from_dict({"max_tokens": 3})


def test_identical_rows_share_their_decoding_steps(tiny_backbone):
    """Rows whose sequences are the same (greedy samples of one query) are one cache row: K=3 costs K=1's steps."""
    module = build_model(str(tiny_backbone), max_query_tokens=16)[0]
    prompts = module.builder.query_prompts(QUERIES)
    fed = []
    handle = module.model.get_decoder().register_forward_hook(
        lambda mod, args, kwargs, out: fed.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    try:
        for copies in (1, 3):
            fed.clear()
            out = decode(module.model, prompts * copies, settings=GenerationSettings(max_new_tokens=8, do_sample=False),
                         pad_id=module.tokenizer.pad_token_id, eos_ids=[module.builder.eos_id],
                         emb_id=module.builder.emb_id)
            assert out.token_ids[:len(prompts)] * copies == out.token_ids
            assert max(fed) <= len(prompts)  # never more cache rows than distinct sequences
    finally:
        handle.remove()


@pytest.mark.parametrize("backbone", ["tiny_backbone", "tiny_qwen_backbone"])
@pytest.mark.parametrize("sampling", [True, False])
def test_rows_that_join_a_running_decode_get_what_decode_gives_them(backbone, sampling, request):
    """Continuous batching: prompts added between steps (their prefill merged into the running cache, whichever
    is longer) end with the tokens, embeddings and own embeddings that one decode call gives them."""
    from o1_embedder.generation import DecodeStream

    module = build_model(str(request.getfixturevalue(backbone)), max_query_tokens=16)[0]
    settings = GenerationSettings(**{**SAMPLING, "do_sample": sampling})
    prompts = module.builder.query_prompts(QUERIES) * 2
    seeds = list(range(len(prompts)))
    ids = dict(pad_id=module.tokenizer.pad_token_id, eos_ids=[module.builder.eos_id],
               suppress_ids=module.special_token_ids, emb_id=module.builder.emb_id)
    expected = decode(module.model, prompts, settings=settings, row_seeds=seeds, prompt_embeddings=True, **ids)
    stream = DecodeStream(module.model, settings=settings, **ids)
    index = dict(zip(stream.add(prompts[:3], seeds[:3], prompt_embeddings=True), range(3)))
    waiting, got, joined_busy = list(range(3, len(prompts))), {}, 0
    while stream.busy or waiting:
        if waiting:
            joined_busy += stream.busy
            i = waiting.pop(0)
            index[stream.add([prompts[i]], [seeds[i]], prompt_embeddings=True)[0]] = i
        for row in stream.step():
            got[index[row]] = stream.take(row)
    assert joined_busy >= 3  # rows did join a running batch
    assert [got[i][0] for i in range(len(prompts))] == expected.token_ids
    assert [got[i][1] for i in range(len(prompts))] == expected.finished
    assert torch.allclose(torch.stack([got[i][2] for i in range(len(prompts))]), expected.embeddings, atol=1e-4)
    assert torch.allclose(torch.stack([got[i][3] for i in range(len(prompts))]), expected.prompt_embeddings,
                          atol=1e-5)
