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
