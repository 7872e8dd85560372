"""Training never saves a collapsed model and never resumes into a different run."""

from __future__ import annotations

import os

import pytest
import torch
from helpers import make_records, write_jsonl
from safetensors.torch import load_file

from o1_embedder import build_model, save_model
from o1_embedder.training import TrainConfig, train
from o1_embedder.training.guard import TrainingCollapsedError, check_collapse
from o1_embedder.training.train import checkpoint_folder, latest_checkpoint


@pytest.fixture(scope="module")
def start(tmp_path_factory, tiny_backbone):
    model = build_model(str(tiny_backbone), max_query_tokens=16, max_document_tokens=24,
                        generation={"max_new_tokens": 8})
    return save_model(model, tmp_path_factory.mktemp("guards") / "start")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("guard-data") / "train.jsonl", make_records(16, negatives=1))


def config(data, start, output, **changes):
    settings = dict(data=str(data), output=str(output), model=str(start), lora_r=4, lora_alpha=8, batch_size=4,
                    num_negatives=1, epochs=1.0, learning_rate=1e-3, logging_steps=1, seed=0)
    return TrainConfig(**{**settings, **changes})


def test_a_collapsed_model_is_never_saved(data, start, tmp_path):
    output = tmp_path / "out"
    train(config(data, start, output))  # an earlier, healthy model
    before = load_file(output / "model.safetensors")
    with pytest.raises(TrainingCollapsedError, match="training collapsed: .*learning rate \\(1e\\+06\\)"):
        train(config(data, start, output, learning_rate=1e6, lora=False, epochs=2.0))
    after = load_file(output / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)  # the earlier model is left as it was


@pytest.mark.parametrize("after, history, reason", [
    ({"finite": 1.0, "min_norm": 0.0, "mean_cosine": 0.0, "min_cosine": 0.0}, [], "zero vectors"),
    ({"finite": 1.0, "min_norm": 1.0, "mean_cosine": 1.0, "min_cosine": 0.9999}, [], "nearly the same vector"),
    ({"finite": 0.0, "min_norm": 0.0, "mean_cosine": 0.0}, [], "NaN or infinite"),
    ({"finite": 1.0, "min_norm": 1.0, "mean_cosine": 0.2, "min_cosine": 0.1}, [{"grad_norm": 0.0}] * 3,
     "gradient norm stayed at 0"),
])
def test_collapse_signs(after, history, reason):
    before = {"finite": 1.0, "min_norm": 1.0, "mean_cosine": 0.3, "min_cosine": 0.1}
    check_collapse(before, before, [{"grad_norm": 1.0}] * 3, 1e-4, "out")  # a healthy run passes
    with pytest.raises(TrainingCollapsedError, match=reason):
        check_collapse(before, after, history, 1e-4, "out")


def test_resume_refuses_changed_settings_and_fresh_runs_over_checkpoints(data, start, tmp_path, capsys):
    output = tmp_path / "out"
    train(config(data, start, output, save_steps=2, max_steps=2))
    folder = checkpoint_folder(output)
    assert latest_checkpoint(folder).endswith("checkpoint-2")
    with pytest.raises(ValueError, match="holds checkpoints of an earlier run.*--resume.*--force"):
        train(config(data, start, output, save_steps=2, max_steps=2))
    with pytest.raises(ValueError, match="learning_rate: 0.001 -> 0.002"):
        train(config(data, start, output, save_steps=2, max_steps=2, learning_rate=2e-3, resume=True))
    other = write_jsonl(tmp_path / "other.jsonl", make_records(16, negatives=1, seed=1))
    with pytest.raises(ValueError, match="data_sha256"):
        train(config(other, start, output, save_steps=2, max_steps=2, resume=True))
    train(config(data, start, output, save_steps=2, max_steps=2, force=True))  # --force starts over
    fresh = tmp_path / "fresh"
    train(config(data, start, fresh, resume=True, max_steps=1))
    assert "no complete checkpoint" in capsys.readouterr().out


def test_a_damaged_newest_checkpoint_is_named_and_skipped(data, start, tmp_path, capsys):
    output = tmp_path / "out"
    train(config(data, start, output, save_steps=1, max_steps=2))
    folder = checkpoint_folder(output)
    newest = os.path.join(folder, "checkpoint-2")
    open(os.path.join(newest, "trainer_state.json"), "w").close()  # empty, as after a crash mid-write
    assert latest_checkpoint(folder).endswith("checkpoint-1")
    assert f"{newest}/trainer_state.json is not readable JSON" in capsys.readouterr().out
    open(os.path.join(folder, "checkpoint-1", "trainable.safetensors"), "w").close()  # 0-byte weights
    assert latest_checkpoint(folder) is None


def test_outputs_are_checked_before_the_first_step(data, start, tmp_path):
    blocker = tmp_path / "adapter"
    blocker.write_text("a file")
    with pytest.raises(ValueError, match="adapter_output .* is a file"):
        train(config(data, start, tmp_path / "out", adapter_output=str(blocker)))
    assert not (tmp_path / "out").exists() and not os.path.exists(checkpoint_folder(tmp_path / "out"))


def test_a_full_disk_is_named_and_leaves_the_earlier_model_and_checkpoints(data, start, tmp_path, monkeypatch):
    import errno

    from safetensors import SafetensorError

    output = tmp_path / "out"
    train(config(data, start, output, save_steps=1, max_steps=1))
    before = load_file(output / "model.safetensors")

    def full(*args, **kwargs):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                              'message: "No space left on device" })')

    monkeypatch.setattr("transformers.modeling_utils.safe_save_file", full)
    with pytest.raises(OSError, match=f"the disk is full: writing the model folder {output}") as err:
        train(config(data, start, output, save_steps=0, max_steps=1, force=True))
    assert err.value.errno == errno.ENOSPC
    after = load_file(output / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing was replaced
    monkeypatch.undo()

    real_save = torch.save

    def torch_full(obj, f, *args, **kwargs):
        if str(f).endswith("optimizer.pt"):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", torch_full)
    with pytest.raises(OSError, match="the disk is full: writing checkpoint .*checkpoint-1.*--resume"):
        train(config(data, start, tmp_path / "other", save_steps=1, max_steps=1))


def test_a_checkpoint_exports_to_the_model_training_would_have_saved(data, start, tmp_path):
    from o1_embedder import load_model
    from o1_embedder.cli import main

    output = tmp_path / "out"
    train(config(data, start, output, save_steps=2, max_steps=2))
    checkpoint = os.path.join(checkpoint_folder(output), "checkpoint-2")
    assert main(["export", checkpoint, str(tmp_path / "exported")]) == 0
    final, exported = load_model(str(output)), load_model(str(tmp_path / "exported"))
    texts = ["a wing in a slipstream", "heat transfer"]
    assert torch.allclose(final.encode_document(texts, convert_to_tensor=True),
                          exported.encode_document(texts, convert_to_tensor=True), atol=1e-5)
    assert main(["export", str(tmp_path), str(tmp_path / "x")]) == 2  # not a checkpoint: a clear error
