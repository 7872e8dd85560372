"""In-batch distillation: the teacher table, the collator's batch-wide labels, the loss and a training run."""

import json

import numpy as np
import pytest
import torch
from helpers import features_of, make_records, write_jsonl

from o1_embedder import build_model, save_model
from o1_embedder.training import JointCollator, JointLoss, TrainConfig, records_to_dataset, train
from o1_embedder.training.loss import CachedJointLoss, in_batch_kl
from o1_embedder.training.teacher_table import TeacherTable, text_key


def table_for(records, score=lambda i, j: 10.0 * i + j) -> TeacherTable:
    """A table over the records' queries and passages with ``scores[i, j] = score(i, j)``."""
    queries = list(dict.fromkeys(r["query"] for r in records))
    passages = list(dict.fromkeys(p for r in records for p in [r["pos"][0], *r["neg"]]))
    scores = np.array([[score(i, j) for j in range(len(passages))] for i in range(len(queries))])
    return TeacherTable.from_texts(queries, passages, scores), queries, passages


def test_table_round_trip_lookup_and_errors(tmp_path):
    table, queries, passages = table_for(make_records(3, negatives=2))
    path = tmp_path / "table.npz"
    table.save(path)
    loaded = TeacherTable.load(path)
    got = loaded.lookup([queries[2], queries[0]], [passages[4], passages[1], passages[4]])
    assert got.tolist() == [[24.0, 21.0, 24.0], [4.0, 1.0, 4.0]]
    assert loaded.missing(queries + ["another query"], passages[:2]) == (["another query"], [])
    with pytest.raises(ValueError, match="no row for the query 'another query'"):
        loaded.lookup(["another query"], passages[:1])
    with pytest.raises(ValueError, match="no column for the passage"):
        loaded.lookup(queries[:1], ["another passage"])
    np.savez(tmp_path / "partial.npz", scores=np.zeros((1, 1)))
    with pytest.raises(ValueError, match="partial.npz: no query_keys, passage_keys array"):
        TeacherTable.load(tmp_path / "partial.npz")
    (tmp_path / "junk.npz").write_text("not a table")
    with pytest.raises(ValueError, match="junk.npz: not a readable .npz file"):
        TeacherTable.load(tmp_path / "junk.npz")
    with pytest.raises(ValueError, match="expected \\(1, 2\\)"):
        TeacherTable([text_key("q")], [text_key("a"), text_key("b")], np.zeros((2, 1)))
    with pytest.raises(ValueError, match="non-finite"):
        TeacherTable([text_key("q")], [text_key("a")], np.array([[np.nan]]))
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left nothing behind


def test_collator_labels_every_query_against_every_passage_of_the_batch(small_model):
    records = make_records(3, negatives=2)
    table, queries, passages = table_for(records)
    rows = [{"anchor": r["query"], "positive": r["pos"][0], "negative_1": r["neg"][0], "negative_2": r["neg"][1],
             "thought": r["thought"]} for r in records]
    batch = JointCollator(small_model[0], thought_dropout=0.0, teacher_table=table)(rows)
    # the loss's order: the positives, then every row's first negative, then every row's second
    order = [r["pos"][0] for r in records] + [r["neg"][0] for r in records] + [r["neg"][1] for r in records]
    expected = [[10.0 * queries.index(r["query"]) + passages.index(p) for p in order] for r in records]
    assert batch["label"].shape == (3, 9) and batch["label"].tolist() == expected
    # without the table the same rows carry no batch-wide labels
    assert "label" not in JointCollator(small_model[0], thought_dropout=0.0)(rows)


def test_in_batch_kl_matches_its_definition_and_the_loss_uses_it(small_model):
    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    passages = [torch.nn.functional.normalize(torch.randn(3, 8), dim=-1) for _ in range(2)]
    teacher = torch.randn(3, 6) * 3
    student = (q @ torch.cat(passages).T) / 0.05
    expected = torch.nn.functional.kl_div(student.log_softmax(1), (teacher / 2.0).softmax(1), reduction="batchmean")
    got = in_batch_kl(q, torch.cat(passages), teacher, 0.05, 2.0)
    assert torch.allclose(got, expected, atol=1e-5) and got > 0
    assert in_batch_kl(q, torch.cat(passages), student * 2.0, 0.05, 2.0).abs() < 1e-5  # the same distribution
    loss = JointLoss(small_model, temperature=0.05, distillation_weight=0.5, teacher_temperature=2.0)
    assert torch.allclose(loss.score(q, passages, teacher)["distillation"], 0.5 * expected, atol=1e-5)
    with pytest.raises(ValueError, match=r"fit neither each query's group \(3, 2\) nor every passage .*\(3, 6\)"):
        loss.score(q, passages, torch.zeros(3, 4))
    # no negatives: a batch of one row has one passage (nothing to distil), a group of the positive alone is refused
    assert loss.score(q[:1], [passages[0][:1]], teacher[:1, :1])["distillation"].abs() < 1e-6
    with pytest.raises(ValueError, match="needs hard negatives"):
        loss.score(q, passages[:1], teacher[:, :1])


def test_training_with_a_teacher_table(tiny_backbone, tmp_path):
    records = make_records(8, negatives=2)
    data = write_jsonl(tmp_path / "train.jsonl", records)
    table, _, _ = table_for(records, score=lambda i, j: float((i * 7 + j * 3) % 5))
    table.save(tmp_path / "table.npz")
    save_model(build_model(str(tiny_backbone), max_query_tokens=16, max_document_tokens=24,
                           generation={"max_new_tokens": 8}), tmp_path / "start")
    settings = dict(data=str(data), model=str(tmp_path / "start"), lora_r=4, lora_alpha=8, batch_size=4,
                    num_negatives=1, logging_steps=1, max_steps=2, distillation_weight=1.0,
                    teacher_table=str(tmp_path / "table.npz"))
    with pytest.raises(ValueError, match="teacher_table needs distillation_weight > 0"):
        TrainConfig(output=str(tmp_path / "x"), **{**settings, "distillation_weight": 0.0})
    partial, _, _ = table_for(records[:5])
    partial.save(tmp_path / "partial.npz")
    with pytest.raises(ValueError, match=r"partial.npz does not cover .*train.jsonl: 3 queries and \d+ passages"):
        train(TrainConfig(output=str(tmp_path / "y"), **{**settings, "teacher_table": str(tmp_path / "partial.npz")}))
    assert not (tmp_path / "y").exists()  # refused before any model loaded or folder was made
    result = train(TrainConfig(output=str(tmp_path / "out"), save_steps=1, **settings))
    terms = [h["distillation"] for h in result.log_history if "distillation" in h]
    assert len(terms) == 2 and all(np.isfinite(terms)) and all(t > 0 for t in terms)
    recorded = json.loads((tmp_path / "out.checkpoints" / "train_run.json").read_text())
    assert recorded["teacher_table_sha256"] and recorded["data_sha256"]
    other, _, _ = table_for(records, score=lambda i, j: float(i - j))
    other.save(tmp_path / "other.npz")
    with pytest.raises(ValueError, match="other settings.*teacher_table_sha256"):
        train(TrainConfig(output=str(tmp_path / "out"), save_steps=1, resume=True,
                          **{**settings, "teacher_table": str(tmp_path / "other.npz")}))


def test_rows_of_records_to_dataset_work_with_a_table(small_model):
    """The list column of negatives (sampled per batch) is looked up as sampled."""
    records = make_records(4, negatives=3)
    table, queries, passages = table_for(records)
    rows = records_to_dataset(records).to_list()
    batch = JointCollator(small_model[0], num_negatives=2, teacher_table=table)(rows)
    assert batch["label"].shape == (4, 12)
    features = features_of(batch)
    small_model.eval()  # no dropout: the GradCache variant must give the same value
    with torch.no_grad():
        losses = JointLoss(small_model, distillation_weight=1.0)(features, batch["label"])
        cached = CachedJointLoss(small_model, mini_batch_size=2, distillation_weight=1.0)(features, batch["label"])
    assert torch.isfinite(losses["distillation"]) and losses["distillation"] > 0
    assert torch.allclose(cached["distillation"], losses["distillation"], atol=1e-4)
