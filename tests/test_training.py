"""Joint training: data validation, collator, loss, LoRA, a full run, and two processes under torchrun."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from helpers import features_of, make_records, write_jsonl

from o1_embedder import build_model, load_model, save_model
from o1_embedder.data.records import RecordFormatError
from o1_embedder.training import (
    JointCollator,
    JointLoss,
    TrainConfig,
    add_lora,
    load_training_data,
    read_records,
    records_to_dataset,
    train,
)


def test_bad_records_name_line_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"query": "q", "pos": ["p"], "neg": ["n"], "thought": "t"}\n'
                    '{"query": 3, "pos": ["p"]}\n'
                    '\n'
                    '{"query": "q", "pos": [], "neg": "x"}\n'
                    '{"query": "q", "pos": ["p"], "pos_scores": [1.0], "neg_scores": [1.0]}\n'
                    'not json\n')
    with pytest.raises(RecordFormatError) as err:
        read_records(path)
    message = str(err.value)
    assert f"{path}:2: field 'query' must be a string" in message
    assert f"{path}:4: field 'pos' is empty" in message and f"{path}:4: field 'neg' must be a list" in message
    assert f"{path}:5: field 'neg_scores' has 1 scores for 0 passages" in message
    assert f"{path}:6: malformed JSON" in message
    with pytest.raises(FileNotFoundError):
        read_records(tmp_path / "missing.jsonl")


def test_dataset_columns(tmp_path):
    ds = load_training_data(write_jsonl(tmp_path / "d.jsonl", make_records(4, with_scores=True)))
    assert ds.column_names == ["anchor", "positive", "negatives", "thought", "teacher_scores"]
    assert len(ds[0]["negatives"]) == 3 and ds[0]["teacher_scores"][0] == 1.0


def test_collator_masks_everything_but_the_thought(small_model):
    module = small_model[0]
    rows = records_to_dataset(make_records(3)).to_list()
    rows[1]["thought"] = ""  # a row without a thought: trained in the no-thought format
    batch = JointCollator(module, num_negatives=2, thought_dropout=0.0)(rows)
    ids, labels, mask = batch["query_input_ids"], batch["query_labels"], batch["query_attention_mask"]
    assert batch["negative_1_input_ids"].shape[0] == 3 and batch["negative_2_input_ids"].shape[0] == 3
    for row in (0, 2):
        thought = module.tokenizer(rows[row]["thought"], add_special_tokens=False)["input_ids"][:16]
        labelled = labels[row][labels[row] != -100].tolist()
        assert labelled == thought + [module.builder.eos_id]
        assert ids[row, -1] == module.builder.emb_id and labels[row, -1] == -100
        positions = (labels[row] != -100).nonzero().flatten()
        assert torch.equal(ids[row, positions], labels[row, positions]) and mask[row, positions].all()
    assert (labels[1] == -100).all()
    no_thought = module.builder.query_without_thought([rows[1]["anchor"]])[0]
    assert ids[1][mask[1].bool()].tolist() == no_thought
    dropped = JointCollator(module, num_negatives=0, thought_dropout=1.0)(rows)
    assert (dropped["query_labels"] == -100).all() and "negative_1_input_ids" not in dropped


def test_one_forward_pass_and_head_only_at_thought_positions(small_model):
    module = small_model[0]
    rows = records_to_dataset(make_records(4)).to_list()
    batch = JointCollator(module, num_negatives=1, thought_dropout=0.0)(rows)
    calls = []
    decoder = module.model.get_decoder()
    handle = decoder.register_forward_hook(lambda mod, args, kwargs_out: calls.append(1))
    head_rows = []
    head = module.model.get_output_embeddings().register_forward_hook(
        lambda mod, args, out: head_rows.append(args[0].shape[0]))
    try:
        features = features_of(batch)
        losses = JointLoss(small_model)(features)
    finally:
        handle.remove()
        head.remove()
    assert len(calls) == 3  # queries once (embedding + thought logits), positives, negatives
    assert head_rows == [int((batch["query_labels"] != -100).sum())]
    assert set(losses) == {"contrastive", "generation"} and all(torch.isfinite(v) for v in losses.values())


def test_batch_without_thoughts_has_finite_loss(small_model):
    rows = records_to_dataset(make_records(3)).to_list()
    for row in rows:
        row["thought"] = ""
    batch = JointCollator(small_model[0], num_negatives=1)(rows)
    features = features_of(batch)
    losses = JointLoss(small_model)(features)
    assert losses["generation"].item() == 0.0 and torch.isfinite(losses["contrastive"])
    sum(losses.values()).backward()  # the graph stays connected


def test_distillation_with_teacher_scores(small_model):
    rows = records_to_dataset(make_records(3, with_scores=True)).to_list()
    batch = JointCollator(small_model[0], num_negatives=2)(rows)
    assert batch["label"].shape == (3, 3)
    features = features_of(batch)
    losses = JointLoss(small_model, distillation_weight=0.5)(features, batch["label"])
    assert "distillation" in losses and torch.isfinite(losses["distillation"]) and losses["distillation"] > 0


def test_distillation_term_is_on_the_contrastive_scale(small_model):
    """KL(teacher || student) with the student's scores at the InfoNCE temperature, not shrunk by temperature**2."""
    loss = JointLoss(small_model, temperature=0.05, distillation_weight=1.0)
    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    passages = [torch.nn.functional.normalize(torch.randn(3, 8), dim=-1) for _ in range(3)]
    labels = torch.tensor([[3.0, 1.0, 0.0], [0.5, 2.0, 1.0], [1.0, 1.0, 4.0]])
    student = torch.stack([(q * p).sum(-1) for p in passages], dim=1) / 0.05
    expected = torch.nn.functional.kl_div(student.log_softmax(1), labels.softmax(1), reduction="batchmean")
    assert torch.allclose(loss.score(q, passages, labels)["distillation"], expected, atol=1e-5)


def _first_last(history, key):
    values = [h[key] for h in history if key in h]
    return sum(values[:2]) / 2, sum(values[-2:]) / 2


def test_training_lowers_both_losses_and_saves_a_loadable_model(tiny_backbone, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", make_records(16))
    source = build_model(str(tiny_backbone), max_query_tokens=16, max_document_tokens=24,
                         generation={"max_new_tokens": 16})
    save_model(source, tmp_path / "start")
    emb_id = source[0].builder.emb_id
    emb_row = source[0].model.get_input_embeddings().weight[emb_id].detach().clone()
    config = TrainConfig(data=str(data), output=str(tmp_path / "out"), model=str(tmp_path / "start"), lora=True,
                         lora_r=8, lora_alpha=16, lora_dropout=0.0, epochs=12, learning_rate=3e-3, batch_size=8,
                         num_negatives=2, thought_dropout=0.0, logging_steps=2, seed=1)
    result = train(config)
    c0, c1 = _first_last(result.log_history, "contrastive")
    g0, g1 = _first_last(result.log_history, "generation")
    assert c1 < c0 and g1 < g0, result.log_history
    trained = load_model(str(result.path))
    trained[0].thought_cache = None
    assert not (trained[0].model.get_input_embeddings().weight[emb_id] == emb_row).all()  # <emb> row trained
    emb = trained.encode_query(["what is a boundary layer"], think=False)
    assert emb.shape == (1, 64)
    assert json.loads((result.path / "training_config.json").read_text())["lora_r"] == 8


def test_lora_targets_projections_and_special_rows(small_model):
    add_lora(small_model, r=4, alpha=8)
    names = [n for n, p in small_model[0].model.named_parameters() if p.requires_grad]
    assert any("q_proj.lora_A" in n for n in names) and any("down_proj.lora_B" in n for n in names)
    assert any("trainable_tokens_delta" in n for n in names)
    with pytest.raises(ValueError, match="Merge LoRA"):
        small_model.save("/tmp/never")


def test_two_processes_under_torchrun(tiny_backbone, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", make_records(16))
    start = build_model(str(tiny_backbone), max_query_tokens=16, max_document_tokens=24,
                        generation={"max_new_tokens": 8})
    save_model(start, tmp_path / "start")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "o1_embedder.cli", "train", str(data), "--output", str(tmp_path / "out"),
           "--model", str(tmp_path / "start"), "--epochs", "1", "--batch-size", "4", "--num-negatives", "1",
           "--lora-r", "4", "--learning-rate", "1e-3", "--logging-steps", "1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=500)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "rank 0 finished training" in output and "rank 1 finished training" in output
    model = load_model(str(tmp_path / "out"))
    model[0].thought_cache = None
    assert model.encode_document(["a wing"]).shape == (1, 64)


def test_cached_loss_matches_the_plain_loss(tiny_backbone):
    """GradCache: same loss values and the same gradients as the plain joint loss, mini-batch by mini-batch."""
    from o1_embedder.training.loss import CachedJointLoss

    grads = []
    for loss_cls, kwargs in ((JointLoss, {}), (CachedJointLoss, {"mini_batch_size": 2})):
        model = build_model(str(tiny_backbone), max_query_tokens=16, max_document_tokens=24,
                            generation={"max_new_tokens": 16})
        rows = records_to_dataset(make_records(5, with_scores=True)).to_list()
        batch = JointCollator(model[0], num_negatives=2, thought_dropout=0.0, seed=3)(rows)
        features = features_of(batch)
        losses = loss_cls(model, distillation_weight=0.3, **kwargs)(features, batch["label"])
        total = torch.stack(list(losses.values())).sum()  # as the trainer does
        total.backward()
        grads.append(({k: float(v.detach()) for k, v in losses.items()},
                      {n: p.grad.clone() for n, p in model[0].model.named_parameters() if p.grad is not None}))
    (plain_values, plain_grads), (cached_values, cached_grads) = grads
    assert plain_values.keys() == cached_values.keys()
    for key in plain_values:
        assert abs(plain_values[key] - cached_values[key]) < 1e-4, key
    assert plain_grads.keys() == cached_grads.keys()
    for name, grad in plain_grads.items():
        assert torch.allclose(grad, cached_grads[name], atol=1e-5, rtol=1e-3), name


def test_checkpoints_resume_and_adapter_round_trip(tiny_backbone, tmp_path):
    """Checkpoints hold the trained tensors; a resumed run ends where an uninterrupted one does; the saved
    adapter applied to the untrained model gives the merged model's embeddings."""
    from o1_embedder.model.loading import apply_adapter
    from o1_embedder.training.train import latest_checkpoint

    data = write_jsonl(tmp_path / "train.jsonl", make_records(16))
    start = build_model(str(tiny_backbone), max_query_tokens=16, max_document_tokens=24,
                        generation={"max_new_tokens": 8})
    save_model(start, tmp_path / "start")
    common = dict(data=str(data), model=str(tmp_path / "start"), lora_r=4, lora_alpha=8, lora_dropout=0.0,
                  epochs=2, learning_rate=2e-3, batch_size=4, num_negatives=1, thought_dropout=0.0,
                  logging_steps=1, seed=3, max_passage_tokens=12)
    full = train(TrainConfig(output=str(tmp_path / "full"), adapter_output=str(tmp_path / "adapter"), **common))
    # A run with checkpoints every 3 steps, cut back to its state after step 3, then resumed.
    train(TrainConfig(output=str(tmp_path / "cut"), save_steps=3, **common))
    folder = tmp_path / "cut.checkpoints"
    assert latest_checkpoint(str(folder)).endswith("checkpoint-8")
    shutil.rmtree(tmp_path / "cut")
    for name in ("checkpoint-6", "checkpoint-8"):
        shutil.rmtree(folder / name)
    assert latest_checkpoint(str(folder)).endswith("checkpoint-3")
    resumed = train(TrainConfig(output=str(tmp_path / "cut"), save_steps=3, resume=True, **common))
    assert resumed.log_history[-1]["step"] == full.log_history[-1]["step"] == 8

    docs = ["the boundary layer thickens downstream", "heated wings at high speed"]
    a, b = load_model(str(full.path)), load_model(str(resumed.path))
    assert a[0].max_document_tokens == 24  # training-only truncation is not saved
    ea, eb = a.encode_document(docs), b.encode_document(docs)
    assert abs(ea - eb).max() < 1e-4
    base = load_model(str(tmp_path / "start"))
    before = base.encode_document(docs)
    apply_adapter(base[0], tmp_path / "adapter")
    assert abs(base.encode_document(docs) - ea).max() < 1e-5 and abs(before - ea).max() > 1e-3


def test_non_finite_loss_stops_training_without_saving(tiny_backbone, tmp_path):
    from o1_embedder.training.trainer import NonFiniteLossError

    data = write_jsonl(tmp_path / "train.jsonl", make_records(8))
    start = build_model(str(tiny_backbone), max_query_tokens=16, max_document_tokens=24,
                        generation={"max_new_tokens": 8})
    save_model(start, tmp_path / "start")
    config = TrainConfig(data=str(data), output=str(tmp_path / "out"), model=str(tmp_path / "start"), lora_r=4,
                         epochs=1, batch_size=4, num_negatives=1, learning_rate=1e30, seed=0)
    with pytest.raises(NonFiniteLossError, match="at step 2"):
        train(config)
    assert not (tmp_path / "out" / "modules.json").exists()


def test_bf16_is_mixed_precision_and_saves_float32(tiny_backbone, tmp_path, monkeypatch):
    """``bf16``: the trainer's autocast runs the projections in bfloat16 while weights (LoRA, special-token rows,
    optimizer state) stay float32, and the saved model is float32 like its start."""
    seen = set()
    linear_forward = torch.nn.Linear.forward

    def recording_forward(self, x):
        out = linear_forward(self, x)
        if torch.is_grad_enabled():
            seen.add(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.Linear, "forward", recording_forward)
    data = write_jsonl(tmp_path / "train.jsonl", make_records(8))
    start = build_model(str(tiny_backbone), max_query_tokens=16, max_document_tokens=24,
                        generation={"max_new_tokens": 8})
    save_model(start, tmp_path / "start")
    result = train(TrainConfig(data=str(data), output=str(tmp_path / "out"), model=str(tmp_path / "start"),
                               lora_r=4, lora_alpha=8, max_steps=2, batch_size=4, num_negatives=1, bf16=True,
                               learning_rate=1e-3, logging_steps=1, seed=0))
    assert torch.bfloat16 in seen
    trained = load_model(str(result.path))
    assert trained[0].dtype == "float32"
    assert {p.dtype for p in trained.parameters()} == {torch.float32}
    emb_id = start[0].builder.emb_id
    assert not torch.equal(trained[0].model.get_input_embeddings().weight[emb_id],
                           start[0].model.get_input_embeddings().weight[emb_id])  # updates not rounded away


def test_selective_checkpointing_recomputes_every_nth_layer(tiny_backbone, tmp_path, monkeypatch):
    """``checkpoint_every_n_layers``: with 2 decoder layers, every layer runs under checkpoint at 1 and half of
    them at 2 (transformers' ``every_n_layers``); the same batches otherwise."""
    import transformers.modeling_utils as modeling_utils

    calls = []
    checkpoint = modeling_utils.checkpoint

    def counting(function, *args, **kwargs):
        calls.append(function)
        return checkpoint(function, *args, **kwargs)

    monkeypatch.setattr(modeling_utils, "checkpoint", counting)
    data = write_jsonl(tmp_path / "train.jsonl", make_records(8))
    start = build_model(str(tiny_backbone), max_query_tokens=16, max_document_tokens=24,
                        generation={"max_new_tokens": 8})
    save_model(start, tmp_path / "start")
    counts = {}
    for every in (1, 2):
        calls.clear()
        train(TrainConfig(data=str(data), output=str(tmp_path / f"out{every}"), model=str(tmp_path / "start"),
                          lora_r=4, lora_alpha=8, max_steps=1, batch_size=4, num_negatives=1, learning_rate=1e-3,
                          gradient_checkpointing=True, checkpoint_every_n_layers=every, seed=0))
        counts[every] = len(calls)
    assert counts[2] > 0 and counts[1] == 2 * counts[2], counts
    with pytest.raises(ValueError, match="checkpoint_every_n_layers"):
        TrainConfig(data=str(data), output=str(tmp_path / "bad"), checkpoint_every_n_layers=0)
