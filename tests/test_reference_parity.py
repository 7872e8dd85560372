"""Converted checkpoints embed as the reference implementation lays sequences out.

Facts used (from the paper's documented format, checked against the reference inference code):
prompt = ``<query>{q}</query><thought>`` cut as a whole prompt at 256 tokens; query + thought =
``prompt + thought + eos + <emb>``; passage = ``{d}<emb>``; the embedding is the final hidden state at
``<emb>``, L2-normalised. Each sequence is tokenised as one string. Differences kept on purpose: one BOS
(the reference's inference adds a second), the format's closing tokens are never cut.
"""

import pytest
import torch
import torch.nn.functional as F
from conftest import _training_text

from o1_embedder import load_model
from o1_embedder.model.formats import SPECIAL_TOKENS
from o1_embedder.model.loading import convert_checkpoint

THOUGHT = "the boundary layer thickens and separates near the trailing edge"
QUERY = "what is the heat transfer in a laminar boundary layer at high speed"
PASSAGE = "experiments on heated wings at supersonic speeds show the heat transfer rate"


def make_tokenizer(kind: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    if kind == "metaspace":  # SentencePiece style (Llama-2 / Mistral conversions)
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        alphabet = []
    else:  # byte-level BPE
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=alphabet,
                                  show_progress=False)
    tok.train_from_iterator(_training_text(), trainer=trainer)
    if kind in ("bos", "metaspace"):
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def reference_checkpoint(path, kind):
    """A tiny checkpoint made as the reference trainer makes one: special tokens added, embeddings resized."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = make_tokenizer(kind)
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return tokenizer


@pytest.fixture(scope="module", params=["plain", "bos", "metaspace"])
def converted(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    tokenizer = reference_checkpoint(root / "ckpt", request.param)
    convert_checkpoint(str(root / "ckpt"), root / "model", num_thoughts=1, generation={"do_sample": False})
    model = load_model(str(root / "model"))
    model[0].thought_cache = None
    return request.param, tokenizer, model


def expected(tokenizer, text):
    """The reference's ids: the whole string tokenised once, with the tokenizer's own BOS (if any) once."""
    return tokenizer(text, add_special_tokens=True)["input_ids"]


def test_prompt_query_thought_and_passage_ids(converted):
    kind, tokenizer, model = converted
    builder = model[0].builder
    prompt = builder.query_prompts([QUERY])[0]
    assert prompt == expected(tokenizer, f"<query>{QUERY}</query><thought>")
    thought = builder.thought_ids([THOUGHT], 64)[0]
    full = builder.close_thought(prompt, thought)
    assert full == expected(tokenizer, f"<query>{QUERY}</query><thought>{THOUGHT}</s><emb>")
    assert builder.documents([PASSAGE])[0] == expected(tokenizer, f"{PASSAGE}<emb>")
    assert (tokenizer.bos_token_id in prompt) == (kind != "plain") and prompt.count(tokenizer.bos_token_id) <= 1


def test_embeddings_equal_a_plain_forward_over_the_reference_ids(converted):
    _, tokenizer, model = converted
    module = model[0]
    lm = module.model
    with torch.no_grad():
        def reference_embedding(text):
            ids = torch.tensor([expected(tokenizer, text)])
            return F.normalize(lm(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, -1], dim=-1)

        passage = model.encode_document([PASSAGE], convert_to_tensor=True)[0]
        assert torch.allclose(passage, reference_embedding(f"{PASSAGE}<emb>"), atol=1e-5)
        no_thought = model.encode_query([QUERY], think=False, convert_to_tensor=True)[0]
        assert torch.allclose(no_thought, reference_embedding(f"<query>{QUERY}</query><thought><emb>"), atol=1e-5)
        prompt = module.builder.query_prompts([QUERY])
        from o1_embedder.model.encoding import embed_sequences

        with_thought = embed_sequences(lm, [module.builder.close_thought(prompt[0], module.builder.thought_ids(
            [THOUGHT], 64)[0])], module.tokenizer.pad_token_id)[0]
        assert torch.allclose(with_thought, reference_embedding(f"<query>{QUERY}</query><thought>{THOUGHT}</s><emb>"),
                              atol=1e-5)


def test_long_queries_keep_what_the_reference_keeps(converted):
    kind, tokenizer, model = converted
    builder = model[0].builder
    words = _training_text()[0].split()
    count = 1
    while len(tokenizer(" ".join((words * 10)[:count + 1]))["input_ids"]) < 200:
        count += 1
    medium = " ".join((words * 10)[:count])  # ~200 tokens: kept whole, as the reference keeps it (not cut at 64)
    medium_prompt = builder.query_prompts([medium])[0]
    assert 190 < len(medium_prompt) <= 256 and medium_prompt == expected(tokenizer, f"<query>{medium}</query><thought>")
    long = " ".join((words * 20)[:600])
    prompt = builder.query_prompts([long])[0]
    assert len(prompt) == 256  # the reference's whole-prompt limit
    assert tokenizer.convert_ids_to_tokens(prompt[-2:]) == ["</query>", "<thought>"]  # never cut
    cut_text = tokenizer.decode(prompt, skip_special_tokens=True).strip()
    assert long.replace(" ", "").startswith(cut_text.replace(" ", "").replace("▁", ""))


def test_convert_settings_round_trip_and_dtype(tmp_path, monkeypatch):
    monkeypatch.delenv("O1_EMBEDDER_DTYPE", raising=False)  # the automatic mode keeps a bfloat16 folder as saved
    reference_checkpoint(tmp_path / "ckpt", "bos")
    convert_checkpoint(str(tmp_path / "ckpt"), tmp_path / "m", dtype="bfloat16", max_query_tokens=40,
                       max_document_tokens=100, num_thoughts=2,
                       generation={"max_new_tokens": 7, "temperature": 0.5, "top_p": 0.8, "seed": 3})
    model = load_model(str(tmp_path / "m"))
    module = model[0]
    assert next(module.model.parameters()).dtype == torch.bfloat16 and module.dtype == "bfloat16"
    assert (module.max_query_tokens, module.max_document_tokens, module.num_thoughts) == (40, 100, 2)
    assert module.generation == {"max_new_tokens": 7, "do_sample": True, "temperature": 0.5, "top_p": 0.8,
                                 "seed": 3}
    module.thought_cache = None
    assert model.encode_query(["a wing"], convert_to_tensor=True).dtype == torch.float32


def test_convert_refuses_embeddings_that_miss_special_tokens(tmp_path):
    from transformers import AutoModelForCausalLM

    reference_checkpoint(tmp_path / "ckpt", "plain")
    lm = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt")
    lm.resize_token_embeddings(lm.get_input_embeddings().weight.shape[0] - 3)  # rows for 3 tokens cut off
    lm.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(ValueError, match="embedding matrix has .* rows"):
        convert_checkpoint(str(tmp_path / "ckpt"), tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_one_pass_in_bfloat16_on_cpu(tmp_path):
    """The embedding read from generation's cache equals re-encoding, in bfloat16: bf16 keeps 8 mantissa bits
    (unit roundoff 2^-8 = 0.0039), and the cached and the full computation add up in different orders, so the
    two vectors differ by a few roundoffs per component; cosine stays above 0.999."""
    from o1_embedder.generation import GenerationSettings, decode
    from o1_embedder.model.encoding import embed_sequences

    reference_checkpoint(tmp_path / "ckpt", "bos")
    convert_checkpoint(str(tmp_path / "ckpt"), tmp_path / "m", dtype="bfloat16")
    module = load_model(str(tmp_path / "m"))[0]
    prompts = module.builder.query_prompts([QUERY, "wing", PASSAGE])
    out = decode(module.model, prompts, settings=GenerationSettings(max_new_tokens=10, do_sample=False),
                 pad_id=module.tokenizer.pad_token_id, eos_ids=[module.builder.eos_id], emb_id=module.builder.emb_id)
    full = [module.builder.close_thought(p, t) for p, t in zip(prompts, out.token_ids)]
    again = embed_sequences(module.model, full, module.tokenizer.pad_token_id)
    assert (out.embeddings - again).abs().max() < 0.03
    assert F.cosine_similarity(out.embeddings, again).min() > 0.999
