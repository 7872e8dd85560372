"""The default's recipe (examples/train_default.py): what each --thought-target makes of the voted records."""

import importlib.util
import json
from argparse import Namespace
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def recipe():
    path = Path(__file__).resolve().parents[1] / "examples" / "train_default.py"
    spec = importlib.util.spec_from_file_location("train_default_recipe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("thought, kept", [
    ("A sentence. Another one cut", "A sentence."),
    ("Ends here.", "Ends here."),
    ('He said "yes." Then he', 'He said "yes."'),
    ("Is it? Maybe not! And then", "Is it? Maybe not!"),
    ("One unfinished sentence", ""),
    ("Version 2.5 was released", ""),
])
def test_whole_sentences(recipe, thought, kept):
    assert recipe.whole_sentences(thought) == kept


def test_thought_targets(recipe, tmp_path):
    rows = [{"query_id": "q1", "query": "first", "pos": ["positive one"], "neg": ["negative"],
             "thought": "Whole. Cut off", "candidates": ["Whole. Cut off"], "votes": [1]},
            {"query_id": "q2", "query": "second", "pos": ["positive two"], "neg": ["negative"],
             "thought": "never ends", "candidates": ["never ends"], "votes": [1]},
            {"query_id": "q3", "query": "third", "pos": ["positive three"], "neg": ["negative"],
             "thought": "Ends well.", "candidates": ["Ends well."], "votes": [1]}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def made(target):
        path = recipe.training_file(tmp_path, Namespace(thought_target=target))
        return [json.loads(line) for line in path.read_text().splitlines()]

    assert recipe.training_file(tmp_path, Namespace(thought_target="voted")) == tmp_path / "train.jsonl"
    assert [r.get("thought") for r in made("voted-sentences")] == ["Whole.", None, "Ends well."]
    assert [r.get("thought") for r in made("positive")] == ["positive one", "positive two", "positive three"]
    none = made("none")
    assert all("thought" not in r and "candidates" not in r for r in none) and len(none) == 3
    assert [r["query_id"] for r in none] == ["q1", "q2", "q3"]


def test_train_seed(recipe, tmp_path, monkeypatch):
    seeds = []
    monkeypatch.setattr("o1_embedder.training.train",
                        lambda config: seeds.append(config.seed) or Namespace(log_history=[]))
    monkeypatch.setattr(recipe, "base_model_dir", lambda out, args: tmp_path / "base-model")
    (tmp_path / "train.jsonl").write_text("")
    for argv in ([], ["--seed", "3"], ["--seed", "3", "--train-seed", "1"]):
        recipe.stage_train(tmp_path, recipe.parse_args(["--out", str(tmp_path), *argv]))
    assert seeds == [0, 3, 1]

    recipe.check_settings(tmp_path, recipe.parse_args(["--out", str(tmp_path)]), "train")
    with pytest.raises(SystemExit, match="--train-seed: None -> 1"):
        recipe.check_settings(tmp_path, recipe.parse_args(["--out", str(tmp_path), "--train-seed", "1"]), "train")


def test_model_card_of_reused_folder(recipe, tmp_path):
    """A folder trained on another's data: its card names a runnable command and every stage's time."""
    source, out = tmp_path / "data", tmp_path / "arm"
    (out / "model").mkdir(parents=True)
    source.mkdir()
    (source / "timings.json").write_text(json.dumps({"mine": 300.0, "synth": 2800.0, "vote": 700.0}))
    (out / "timings.json").write_text(json.dumps({"train": 5100.0}))
    (out / "recipe.json").write_text(json.dumps({"seed": 0, "epochs": 0.5, "bf16": True, "synth_dtype": "bfloat16",
                                                 "records": 2600, "train_seed": None,
                                                 "reused_from": str(source)}))
    (out / "model" / "training_config.json").write_text(json.dumps({"epochs": 1.0, "output": "x"}))
    card = recipe.model_card(out, recipe.parse_args(["--out", str(out)]), "0" * 64)
    command = next(line for line in card.splitlines() if line.startswith("python examples/train_default.py"))
    assert command == "python examples/train_default.py --out DIR --epochs 0.5 --bf16 --synth-dtype bfloat16"
    recipe.parse_args(command.split()[2:])  # the card's command is one the recipe accepts
    times = json.loads(next(line for line in card.splitlines() if line.startswith("Stage times")).split(": ", 1)[1])
    assert times == {"mine": 300.0, "synth": 2800.0, "vote": 700.0, "train": 5100.0}
