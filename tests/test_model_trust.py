"""A model folder loads only what it claims: weights that match its config, finite values, no code of its own."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from o1_embedder import build_model, load_model, save_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_backbone) -> Path:
    model = build_model(str(tiny_backbone), num_thoughts=1, generation={"do_sample": False, "max_new_tokens": 4})
    return save_model(model, tmp_path_factory.mktemp("trust") / "model")


def _copy(saved: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(saved, target)
    return target


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("layers, kind", [(3, "missing"), (1, "unexpected")])
def test_config_that_does_not_match_the_weights_is_refused(saved, tmp_path, layers, kind):
    folder = _copy(saved, tmp_path)
    _edit_json(folder / "config.json", num_hidden_layers=layers)
    with pytest.raises(ValueError, match=f"do not match its config.json .*{kind} weights .*layers"):
        load_model(str(folder))


@pytest.mark.parametrize("config_file", ["config.json", "tokenizer_config.json"])
def test_folder_with_its_own_code_is_refused_without_a_prompt(saved, tmp_path, config_file, monkeypatch):
    folder = _copy(saved, tmp_path)
    (folder / "custom.py").write_text("raise SystemExit('custom code ran')\n")
    _edit_json(folder / config_file, auto_map={"AutoModelForCausalLM": "custom.Model",
                                               "AutoTokenizer": ["custom.Tok", None]})
    monkeypatch.setattr("builtins.input", lambda *a: pytest.fail("asked whether to run the folder's code"))
    with pytest.raises(ValueError, match="auto_map.*runs no code from a model folder"):
        load_model(str(folder))


def test_non_finite_weights_are_refused(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    weights = load_file(folder / "model.safetensors")
    name = next(k for k in weights if k.endswith("norm.weight"))
    weights[name][0] = float("inf")
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=f"non-finite .*{name}"):
        load_model(str(folder))


def test_nan_adapter_is_refused_at_merge(saved, tmp_path):
    from o1_embedder.model.loading import apply_adapter
    from o1_embedder.training.lora import add_lora, save_adapter

    model = load_model(str(saved))
    add_lora(model, r=2, alpha=4, dropout=0.0)
    with torch.no_grad():
        for name, param in model[0].model.named_parameters():
            if "lora_B" in name:
                param.fill_(float("nan"))
    save_adapter(model, tmp_path / "adapter")
    with pytest.raises(ValueError, match="non-finite"):
        apply_adapter(load_model(str(saved))[0], tmp_path / "adapter")


def test_a_folder_named_o1_embedder_where_you_stand_is_named_when_loaded(saved, tmp_path, monkeypatch, caplog):
    shutil.copytree(saved, tmp_path / "o1-embedder")
    monkeypatch.chdir(tmp_path)
    with caplog.at_level("WARNING", logger="o1_embedder.model.loading"):
        load_model("o1-embedder")
    assert f"loading the model folder {tmp_path / 'o1-embedder'} (not the embedded default" in caplog.text


def test_save_refusal_names_the_python_argument(tmp_path, saved):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("x")
    with pytest.raises(FileExistsError, match="force=True"):
        save_model(load_model(str(saved)), tmp_path / "busy")
