"""Shared fixtures: tiny randomly initialised causal LMs with a small trained BPE tokenizer, offline."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

DATA_DIR = Path(__file__).resolve().parents[1] / "o1_embedder" / "datasets" / "cranfield"
FALLBACK_TEXT = ("the boundary layer of a heated wing at high speed flow changes the pressure distribution "
                 "and the heat transfer of the aircraft model in the wind tunnel experiment ") * 20


def _training_text() -> list[str]:
    corpus = DATA_DIR / "corpus.jsonl"
    if corpus.is_file():
        with open(corpus, encoding="utf-8") as f:
            return [json.loads(line)["text"] for _, line in zip(range(400), f)]
    return [FALLBACK_TEXT]


def make_tokenizer(vocab_size: int = 400, llama_bos: bool = True):
    """A byte-level BPE tokenizer with ``<s>``/``</s>``/``<unk>`` and no pad token (Llama-style BOS)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_training_text(), trainer=trainer)
    if llama_bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def make_backbone(path: Path, arch: str = "llama", vocab_size: int = 400, seed: int = 0) -> Path:
    """Save a tiny random causal LM + tokenizer to ``path``. The eos row is scaled so thoughts end at varied steps."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    tokenizer = make_tokenizer(vocab_size)
    common = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=False))
    elif arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=True))
    else:
        raise ValueError(arch)
    with torch.no_grad():
        model.get_output_embeddings().weight[tokenizer.eos_token_id] *= 15
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# Numerical tests compare float32 results; the automatic bfloat16 choice is tested on its own (test_dtypes.py).
os.environ.setdefault("O1_EMBEDDER_DTYPE", "float32")


@pytest.fixture(scope="session", autouse=True)
def _isolated_thought_cache(tmp_path_factory):
    os.environ["O1_EMBEDDER_THOUGHT_CACHE"] = str(tmp_path_factory.mktemp("cache") / "thoughts.sqlite")
    yield


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> Path:
    return make_backbone(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def tiny_qwen_backbone(tmp_path_factory) -> Path:
    return make_backbone(tmp_path_factory.mktemp("tiny-qwen2"), "qwen2")


SAMPLING = {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 12, "seed": 7}


@pytest.fixture()
def tiny_model(tiny_backbone):
    """A fresh o1-embedder SentenceTransformer on the tiny Llama, K=2 sampled thoughts, cache off."""
    from o1_embedder import build_model

    model = build_model(str(tiny_backbone), num_thoughts=2, generation=SAMPLING, max_query_tokens=16,
                        max_document_tokens=48)
    model[0].thought_cache = None
    return model


@pytest.fixture()
def tiny_greedy_model(tiny_backbone):
    """A fresh o1-embedder SentenceTransformer on the tiny Llama, greedy K=1 thoughts of up to 6 tokens, cache off."""
    from o1_embedder import build_model

    model = build_model(str(tiny_backbone), num_thoughts=1, generation={"do_sample": False, "max_new_tokens": 6},
                        max_query_tokens=16, max_document_tokens=24)
    model[0].thought_cache = None
    return model


@pytest.fixture()
def small_model(tiny_backbone):
    """A fresh o1-embedder SentenceTransformer on the tiny Llama for training: up to 16 thought tokens, cache off."""
    from o1_embedder import build_model

    model = build_model(str(tiny_backbone), max_query_tokens=16, max_document_tokens=24,
                        generation={"max_new_tokens": 16})
    model[0].thought_cache = None
    return model


QUERIES = ["what is the boundary layer", "heat transfer at high speed over a swept wing in a wind tunnel", "",
           "pressure"]
DOCUMENTS = ["the boundary layer thickens downstream", "heated wings at high speed", "pressure distribution"]
