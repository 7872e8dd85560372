"""Sentence-Transformers habits: standard columns and losses, encode routing, errors that say what to do."""

import importlib.util
import warnings
from pathlib import Path

import pytest
import torch
from conftest import DOCUMENTS, QUERIES
from helpers import features_of
from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

from o1_embedder.training import JointCollator, JointLoss, JointTrainer

ROWS = {"anchor": ["what is lift", "heat transfer at high speed"],
        "positive": ["lift is a force on a wing", "heated wings at high speed"],
        "negative": ["a slab in a tunnel", "pressure distribution"],
        "thought": ["lift acts on wings", "heat flows"]}


@pytest.fixture()
def model(tiny_greedy_model):
    return tiny_greedy_model


def _args(tmp_path, **kwargs):
    return SentenceTransformerTrainingArguments(output_dir=str(tmp_path / "ckpt"), max_steps=1,
                                                per_device_train_batch_size=2, report_to=[], save_strategy="no",
                                                use_cpu=True, **kwargs)


def _rows():
    return [{k: v[i] for k, v in ROWS.items()} for i in range(2)]


def test_plain_st_loss_trains_queries_in_the_query_format(model, tmp_path, caplog):
    from datasets import Dataset

    dataset = Dataset.from_dict({k: v for k, v in ROWS.items() if k != "thought"})
    trainer = JointTrainer(model=model, args=_args(tmp_path), train_dataset=dataset,
                           loss=MultipleNegativesRankingLoss(model))
    model.train()
    with caplog.at_level("WARNING"):
        batch = trainer.data_collator([{k: v[i] for k, v in dataset.to_dict().items()} for i in range(2)])
    builder = model[0].builder
    anchors = batch["anchor_input_ids"][batch["anchor_attention_mask"].bool()].tolist()
    expected = [t for seq in builder.query_without_thought(ROWS["anchor"]) for t in seq]
    assert anchors == expected  # training-time anchor ids == inference ids (no thought)
    positives = batch["positive_input_ids"][batch["positive_attention_mask"].bool()].tolist()
    assert positives == [t for seq in builder.documents(ROWS["positive"]) for t in seq]
    assert "training mode, where it never generates" in caplog.text  # the module would think: it says it won't
    emb_row = model[0].model.get_input_embeddings().weight[model[0].builder.emb_id].detach().clone()
    trainer.train()  # the step trains the model, <emb> row included
    assert not torch.equal(model[0].model.get_input_embeddings().weight[model[0].builder.emb_id], emb_row)


def test_stock_trainer_with_router_mapping_never_thinks_under_gradients(model, tmp_path):
    from datasets import Dataset

    dataset = Dataset.from_dict({k: v for k, v in ROWS.items() if k != "thought"})
    trainer = SentenceTransformerTrainer(model=model, args=_args(tmp_path, router_mapping={"anchor": "query"}),
                                         train_dataset=dataset, loss=MultipleNegativesRankingLoss(model))
    before = model[0].stats["generate_calls"]
    trainer.train()
    assert model[0].stats["generate_calls"] == before


def test_stock_trainer_without_router_mapping_stops_before_the_first_step(model, tmp_path):
    from datasets import Dataset

    dataset = Dataset.from_dict({k: v for k, v in ROWS.items() if k != "thought"})
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    trainer = SentenceTransformerTrainer(model=model, args=_args(tmp_path), train_dataset=dataset,
                                         loss=MultipleNegativesRankingLoss(model))
    with pytest.raises(ValueError, match=r"no router_mapping.*JointTrainer.*router_mapping=\{'anchor': 'query'\}"):
        trainer.train()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # no step was taken
    # a document anchor on purpose (symmetric pairs) is the user's choice
    documents = SentenceTransformerTrainer(model=model, args=_args(tmp_path, router_mapping={"anchor": "document"}),
                                           train_dataset=dataset, loss=MultipleNegativesRankingLoss(model))
    documents.train()
    assert not all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_card_after_training_keeps_this_packages_usage(model, tmp_path):
    from datasets import Dataset

    dataset = Dataset.from_dict({k: v for k, v in ROWS.items() if k != "thought"})
    trainer = JointTrainer(model=model, args=_args(tmp_path), train_dataset=dataset,
                           loss=MultipleNegativesRankingLoss(model))
    trainer.train()
    model.save_pretrained(str(tmp_path / "saved"))
    card = (tmp_path / "saved" / "README.md").read_text()
    assert "generated_from_trainer" in card and "MultipleNegativesRankingLoss" in card  # what ST records
    assert "pip install o1-embedder" in card and "trust_remote_code=True" in card and "encode_query" in card
    assert 'SentenceTransformer("path/to/this-folder", trust_remote_code=True)' in card


def test_card_after_stock_training_of_a_directly_loaded_folder(model, tmp_path):
    """SentenceTransformer(path, trust_remote_code=True) and the stock trainer: ST's card, with this usage."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer

    from o1_embedder import save_model

    loaded = SentenceTransformer(str(save_model(model, tmp_path / "m")), trust_remote_code=True)
    dataset = Dataset.from_dict({k: v for k, v in ROWS.items() if k != "thought"})
    SentenceTransformerTrainer(model=loaded, args=_args(tmp_path, router_mapping={"anchor": "query"}),
                               train_dataset=dataset, loss=MultipleNegativesRankingLoss(loaded)).train()
    loaded.save_pretrained(str(tmp_path / "saved"))
    card = (tmp_path / "saved" / "README.md").read_text()
    assert "generated_from_trainer" in card and "MultipleNegativesRankingLoss" in card
    assert "trust_remote_code=True" in card and "encode_query" in card and "pip install o1-embedder" in card


def test_joint_loss_needs_the_joint_collator(model):
    batch = JointTrainer.data_collator_class(preprocess_fn=model.preprocess)(_rows())
    with pytest.raises(ValueError, match="JointCollator"):
        JointLoss(model)(features_of(batch))
    joint = JointCollator(model[0], thought_dropout=0.0)(_rows())
    assert set(JointLoss(model)(features_of(joint))) == {"contrastive", "generation"}
    assert "negative_1_input_ids" in joint  # one group per negative column, as Sentence-Transformers has


def test_collator_checks_column_types(model):
    bad = [{"anchor": "q", "positive": "p", "negatives": "one string"}]
    with pytest.raises(TypeError, match="'negatives' must be a list"):
        JointCollator(model[0])(bad)
    with pytest.raises(TypeError, match="'positive' must be a string"):
        JointCollator(model[0])([{"anchor": "q", "positive": ["p"]}])
    listed = JointCollator(model[0], num_negatives=2)([{"anchor": "q", "positive": "p", "negatives": ["a", "b", "c"]}])
    assert "negative_2_input_ids" in listed and "negative_3_input_ids" not in listed


def test_encode_routing(model):
    q = model.encode_query(QUERIES[:2], convert_to_tensor=True)
    assert torch.allclose(model.encode(QUERIES[:2], prompt_name="query", convert_to_tensor=True), q, atol=1e-5)
    d = model.encode_document(DOCUMENTS, convert_to_tensor=True)
    assert torch.allclose(model.encode(DOCUMENTS, prompt_name="document", convert_to_tensor=True), d, atol=1e-5)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        plain = model.encode(DOCUMENTS, convert_to_tensor=True)
        model.encode(DOCUMENTS, convert_to_tensor=True)
    routed = [w for w in record if "embeds its inputs as documents" in str(w.message)]
    assert len(routed) == 1 and torch.allclose(plain, d, atol=1e-5)
    for encode, kwargs in ((model.encode, {}), (model.encode_query, {}), (model.encode_query, {"think": False})):
        with pytest.raises(ValueError, match="token_embeddings"):
            encode(DOCUMENTS[:1], output_value="token_embeddings", **kwargs)


def test_st_trainer_example_runs(tiny_backbone, tmp_path, capsys):
    path = Path(__file__).resolve().parents[1] / "examples" / "train_with_st_trainer.py"
    spec = importlib.util.spec_from_file_location("st_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    for loss in ("joint", "mnrl"):
        assert example.main(["--backbone", str(tiny_backbone), "--loss", loss, "--output", str(tmp_path / loss),
                             "--train-queries", "8", "--max-steps", "2", "--batch-size", "4"]) == 0
        assert (tmp_path / loss / "modules.json").exists()
    assert "held-out nDCG@10" in capsys.readouterr().out


def test_saved_folder_carries_a_real_model_card(model, tmp_path):
    from o1_embedder import save_model

    path = save_model(model, tmp_path / "my-o1-model")
    card = (path / "README.md").read_text()
    for needed in ("pip install o1-embedder", 'SentenceTransformer("my-o1-model", trust_remote_code=True)',
                   "encode_query", "encode_document", "Thinking cost", "arXiv:2502.07555", "`num_thoughts` | `1`"):
        assert needed in card, needed
    assert "sentence_transformers_model_id" not in card
    # a backbone from a local folder is named in the text (never "unknown"), and kept out of the hub header
    assert f"`{tiny_backbone_name(model)} (a local folder)`" in card and "unknown" not in card
    assert "base_model:" not in card.split("---")[1]


def tiny_backbone_name(model) -> str:
    return Path(model[0].model.config._name_or_path).name


@pytest.mark.parametrize("name", ["query", "search_query", "question", "retrieval.query"])
def test_query_prompt_names_and_prefixes_think(model, name):
    q = model.encode_query(QUERIES[:2], convert_to_tensor=True)
    assert torch.allclose(model.encode(QUERIES[:2], prompt_name=name, convert_to_tensor=True), q, atol=1e-5)
    for prefix in (f"{name}: ", f"{name}:"):  # the E5 habit: the side named in the prompt text
        assert torch.allclose(model.encode(QUERIES[:2], prompt=prefix, convert_to_tensor=True), q, atol=1e-5)


@pytest.mark.parametrize("name", ["passage", "text", "corpus", "document", "search_document"])
def test_document_prompt_names_and_prefixes_embed_documents(model, name):
    d = model.encode_document(DOCUMENTS, convert_to_tensor=True)
    assert torch.allclose(model.encode(DOCUMENTS, prompt_name=name, convert_to_tensor=True), d, atol=1e-5)
    assert torch.allclose(model.encode(DOCUMENTS, prompt=f"{name}: ", convert_to_tensor=True), d, atol=1e-5)


@pytest.fixture()
def saved(model, tmp_path):
    """The tiny model saved as a folder, with its query (thinking) and document vectors computed in process."""
    from o1_embedder import save_model

    path = save_model(model, tmp_path / "m")
    return (str(path), model.encode_query(QUERIES[:1], convert_to_numpy=True)[0],
            model.encode_document(DOCUMENTS, convert_to_numpy=True))


def test_langchain_embeds_queries_with_thinking(saved):
    """langchain-huggingface itself, with the settings the README gives (it pins huggingface_hub below 2, so CI
    installs it with --no-deps; its code runs unchanged on this hub)."""
    import numpy as np

    lc = pytest.importorskip("langchain_huggingface")
    path, q, d = saved
    emb = lc.HuggingFaceEmbeddings(model_name=path, model_kwargs={"trust_remote_code": True},
                                   query_encode_kwargs={"prompt_name": "query"})
    np.testing.assert_allclose(emb.embed_query(QUERIES[0]), q, atol=1e-5)
    np.testing.assert_allclose(emb.embed_documents(DOCUMENTS), d, atol=1e-5)
    # its default query call is plain encode, a document: what the README's setting is for
    plain = lc.HuggingFaceEmbeddings(model_name=path, model_kwargs={"trust_remote_code": True})
    assert not np.allclose(plain.embed_query(QUERIES[0]), q, atol=1e-3)


def test_llamaindex_embeds_queries_with_thinking(saved):
    """llama-index-embeddings-huggingface itself, with the settings the README gives."""
    import numpy as np

    li = pytest.importorskip("llama_index.embeddings.huggingface")
    from o1_embedder.model.module import QUERY_PROMPT

    path, q, d = saved
    emb = li.HuggingFaceEmbedding(model_name=path, trust_remote_code=True, query_instruction=QUERY_PROMPT,
                                  device="cpu")
    np.testing.assert_allclose(emb.get_query_embedding(QUERIES[0]), q, atol=1e-5)
    np.testing.assert_allclose(emb.get_text_embedding_batch(DOCUMENTS), d, atol=1e-5)
