"""MTEB integration: options, wrapper, ModelMeta + registry, local BEIR tasks, mteb.evaluate and `mteb run`.

Everything is local: a tiny random o1-embedder saved to tmp_path and a 20-document / 5-query BEIR folder.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import shutil
from pathlib import Path

import pytest

mteb = pytest.importorskip("mteb")

from o1_embedder import save_model  # noqa: E402
from o1_embedder.data import BeirFormatError  # noqa: E402
from o1_embedder.evaluation.mteb import (  # noqa: E402
    WRAPPER_OPTIONS,
    O1EmbedderEncoderWrapper,
    beir_task,
    folder_revision,
    o1_model_meta,
    register,
    register_model,
    registered,
    run_mteb_cli,
    unregister,
)
from o1_embedder.evaluation.mteb.options import add_flags, options_from_args  # noqa: E402
from o1_embedder.generation.settings import GenerationSettings  # noqa: E402

PACKAGE = Path(__file__).resolve().parents[1] / "o1_embedder" / "evaluation" / "mteb"
GENERATION_FIELDS = [f.name for f in dataclasses.fields(GenerationSettings)]

TOPICS = ["boundary layer transition on a flat plate", "heat transfer in hypersonic flow",
          "buckling of thin cylindrical shells", "flutter of swept wings", "shock wave interaction with a wedge"]
JUDGED = [f"q{t}" for t in range(len(TOPICS))]


def write_beir(root: Path) -> Path:
    """20 documents (4 per topic), 5 judged queries (grades 2, 1 and a 0) and one query with no judgment."""
    (root / "qrels").mkdir(parents=True)
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as f:
        for t, topic in enumerate(TOPICS):
            for j in range(4):
                f.write(json.dumps({"_id": f"d{t}{j}", "title": f"study {j} of {topic}",
                                    "text": f"we measure {topic} in experiment {j} and report the results"}) + "\n")
    with open(root / "queries.jsonl", "w", encoding="utf-8") as f:
        for t, topic in enumerate(TOPICS):
            f.write(json.dumps({"_id": f"q{t}", "text": f"what is known about {topic}"}) + "\n")
        f.write(json.dumps({"_id": "q_unjudged", "text": "a query nobody judged"}) + "\n")
    with open(root / "qrels" / "test.tsv", "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for t in range(len(TOPICS)):
            f.write(f"q{t}\td{t}0\t2\nq{t}\td{t}1\t1\nq{t}\td{(t + 1) % 5}2\t0\n")
    return root


@pytest.fixture()
def beir_dir(tmp_path) -> Path:
    return write_beir(tmp_path / "tiny-beir")


@pytest.fixture()
def model_dir(tiny_model, tmp_path) -> Path:
    """The tiny model (K=2 sampled thoughts, thought cache off) with short thoughts, saved as a folder."""
    tiny_model[0].configure(max_new_tokens=4)
    return save_model(tiny_model, tmp_path / "tiny-o1")


def result_file(output: Path, task: str) -> dict:
    files = list(output.rglob(f"{task}.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def scores_of(result: dict) -> dict:
    (scores,) = result["scores"]["test"]
    return scores


def test_model_meta_from_folder(model_dir, tiny_model):
    meta = o1_model_meta(model_dir)
    assert meta.name == "local/tiny-o1"
    assert meta.revision == folder_revision(model_dir) and len(meta.revision) == 16
    assert meta.n_parameters == sum(p.numel() for p in tiny_model[0].model.parameters())
    assert meta.n_embedding_parameters == tiny_model[0].model.get_input_embeddings().weight.numel()
    assert meta.embed_dim == 64 and meta.max_tokens == 48
    assert meta.similarity_fn_name.value == "cosine"
    assert meta.framework == ["Sentence Transformers", "PyTorch"]
    assert meta.use_instructions is False and meta.model_type == ["dense"]
    assert meta.release_date is None and meta.license is None and meta.open_weights is None
    assert meta.loader is O1EmbedderEncoderWrapper and meta.loader_kwargs == {"model_path": str(model_dir.resolve())}
    assert meta.experiment_kwargs is None

    # thinking settings are part of the folder's revision; loader options become experiment kwargs
    config = model_dir / "o1_embedder_config.json"
    data = json.loads(config.read_text())
    config.write_text(json.dumps({**data, "num_thoughts": 1}))
    assert folder_revision(model_dir) != meta.revision
    other = o1_model_meta(model_dir, name="me/tiny", think=False, license="mit", open_weights=True)
    assert (other.name, other.license, other.open_weights) == ("me/tiny", "mit", True)
    assert other.experiment_kwargs == {"think": False} and other.loader_kwargs["think"] is False
    with pytest.raises(TypeError, match="unknown option"):
        o1_model_meta(model_dir, thinking=False)

    # memory in the dtype the model is loaded with; options in one order whatever the call's order
    assert meta.memory_usage_mb == round(meta.n_parameters * 4 / 2**20, 1)
    half = o1_model_meta(model_dir, seed=3, think=False, model_kwargs={"dtype": "bfloat16"})
    assert half.memory_usage_mb == round(meta.n_parameters * 2 / 2**20, 1)
    assert list(half.experiment_kwargs) == ["think", "seed", "model_kwargs"]
    with pytest.raises(ValueError, match="top_p"):
        o1_model_meta(model_dir, top_p=2.0)
    with pytest.raises(TypeError, match="num_thoughts"):
        o1_model_meta(model_dir, num_thoughts="2")


def test_meta_rejects_non_o1_folders(tmp_path, tiny_backbone, model_dir):
    with pytest.raises(FileNotFoundError, match="not found"):
        o1_model_meta(tmp_path / "missing")
    with pytest.raises(ValueError, match="o1_embedder_config.json"):
        o1_model_meta(tiny_backbone)
    (model_dir / "model.safetensors").write_bytes(b"\x08" + b"\0" * 15)
    with pytest.raises(ValueError, match="model.safetensors"):
        o1_model_meta(model_dir)


def test_options_follow_generation_settings(tiny_model, capsys):
    """Every GenerationSettings field is a wrapper option and a `mteb run` flag, typed by its annotation."""
    assert set(GENERATION_FIELDS) <= set(WRAPPER_OPTIONS)
    assert {"think", "num_thoughts", "batch_size", "query_batch_size"} <= set(WRAPPER_OPTIONS)
    assert run_mteb_cli(["run", "--help"]) == 0
    help_text = capsys.readouterr().out
    for flag in ("--beir-task", "--think", "--no-think", "--num-thoughts", "--thought-cache", "--query-batch-size",
                 *("--" + name.replace("_", "-") for name in GENERATION_FIELDS if name != "do_sample"), "--greedy"):
        assert flag in help_text, flag
    assert "--do-sample" not in help_text  # one spelling in every command
    parser = argparse.ArgumentParser()
    add_flags(parser)
    assert options_from_args(parser.parse_args(["--greedy"]))["do_sample"] is False
    assert options_from_args(parser.parse_args(["--no-greedy"]))["do_sample"] is True
    assert "do_sample" not in options_from_args(parser.parse_args([]))
    assert "--output-folder" in help_text  # mteb's own options follow

    saved = tiny_model[0].generation_settings
    model = O1EmbedderEncoderWrapper(tiny_model, think=False, max_new_tokens=2, do_sample=False, seed=7)
    assert model.think is False and model.module.think is False
    assert model.module.generation_settings == saved.replace(max_new_tokens=2, do_sample=False, seed=7)
    with pytest.raises(TypeError, match="temperature"):
        O1EmbedderEncoderWrapper(tiny_model, temperature="hot")
    with pytest.raises(TypeError, match="already loaded"):
        O1EmbedderEncoderWrapper(tiny_model, trust_remote_code=True)


def test_private_mteb_state_is_touched_in_one_function():
    """Imports of mteb's private names (underscored, or its model registry) stand only in registry._mteb_registries."""
    private = []
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        functions = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)]
        for node in ast.walk(tree):
            if not (isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mteb"):
                continue
            names = [node.module, *(alias.name for alias in node.names)]
            if any(part.startswith("_") or part == "MODEL_REGISTRY" for name in names for part in name.split(".")):
                owner = [f.name for f in functions if f.lineno <= node.lineno <= (f.end_lineno or f.lineno)]
                private.append((path.name, owner))
    assert private == [("registry.py", ["_mteb_registries"])] * 2


def test_register_and_get_model(model_dir):
    meta = register_model(model_dir, name="test/registered-tiny")
    try:
        assert mteb.get_model_meta("test/registered-tiny") is meta
        model = mteb.get_model("test/registered-tiny", think=False)
        assert isinstance(model, O1EmbedderEncoderWrapper)
        assert isinstance(model, mteb.models.EncoderProtocol)
        assert model.think is False
        assert model.mteb_model_meta.revision == meta.revision
        assert model.mteb_model_meta.experiment_kwargs == {"think": False}
    finally:
        assert unregister("test/registered-tiny") is meta
    with pytest.raises(KeyError):
        mteb.get_model_meta("test/registered-tiny")
    own = mteb.get_model_meta("mteb/baseline-random-encoder")
    with pytest.raises(ValueError, match="mteb's own"):
        register(o1_model_meta(model_dir, name=own.name))
    assert unregister(own.name) is None and mteb.get_model_meta(own.name) is own


def test_beir_task_validates_and_converts(beir_dir, tmp_path):
    task = beir_task(beir_dir, name="TinyBeir")
    assert task.metadata.name == "TinyBeir" and task.metadata.main_score == "ndcg_at_10"
    assert task.metadata.eval_splits == ["test"] and task.metadata.type == "Retrieval"
    task.load_data()
    split = task.dataset["default"]["test"]
    assert len(split["corpus"]) == 20
    assert split["queries"]["id"] == JUDGED  # the unjudged query is not evaluated
    assert split["relevant_docs"]["q0"] == {"d00": 2, "d01": 1, "d12": 0}

    bad = write_beir(tmp_path / "bad")
    with open(bad / "qrels" / "test.tsv", "a", encoding="utf-8") as f:
        f.write("q0\tno-such-doc\t1\n")
    with pytest.raises(BeirFormatError, match="test.tsv"):
        beir_task(bad)
    with pytest.raises(FileNotFoundError, match="split 'dev'"):
        beir_task(beir_dir, split="dev")


def test_evaluate_thinks_for_queries_only(model_dir, beir_dir, tmp_path):
    meta = register_model(model_dir)
    try:
        model = mteb.get_model(meta.name)
    finally:
        unregister(meta.name)
    calls = []
    st = model.model
    for method in ("encode_query", "encode_document"):  # both call st.encode, which must not be called directly
        original = getattr(st, method)

        def spy(texts, *args, _name=method, _original=original, **kwargs):
            calls.append((_name, len(texts), kwargs.get("think")))
            return _original(texts, *args, **kwargs)
        setattr(st, method, spy)
    direct = st.encode
    st.encode = lambda *args, **kwargs: calls.append(("encode", None, None)) or direct(*args, **kwargs)

    output = tmp_path / "results"
    result = mteb.evaluate(model, beir_task(beir_dir, name="TinyBeir"), cache=mteb.ResultCache(output),
                           co2_tracker=False, show_progress_bar=False, encode_kwargs={"batch_size": 8})

    scores = scores_of(result_file(output, "TinyBeir"))
    assert 0.0 <= scores["ndcg_at_10"] <= 1.0 and scores["main_score"] == scores["ndcg_at_10"]
    assert result.task_results[0].get_score() == pytest.approx(scores["ndcg_at_10"])
    assert sorted(c for c in calls if c[0] != "encode") == [("encode_document", 20, None), ("encode_query", 5, True)]
    assert len([c for c in calls if c[0] == "encode"]) == 2  # only from inside encode_query / encode_document
    stats = model.module.stats
    assert stats["generate_calls"] >= 1 and stats["generated_tokens"] > 0
    assert stats["thoughts_generated"] == 5 * 2  # 5 judged queries x K=2 thoughts, no document thought
    path = next(output.rglob("TinyBeir.json"))
    assert path.parent == output / "results" / "local__tiny-o1" / meta.revision
    saved_meta = json.loads((path.parent / "model_meta.json").read_text())
    assert saved_meta["loader"] == "O1EmbedderEncoderWrapper" and saved_meta["n_parameters"] == meta.n_parameters


def test_no_think_matches_own_evaluation(model_dir, beir_dir, tmp_path):
    """Without thinking the run is deterministic: mteb's nDCG@10 equals o1-embedder's own evaluation."""
    from o1_embedder import load_model
    from o1_embedder.data import load_beir
    from o1_embedder.evaluation import evaluate_dense

    meta = o1_model_meta(model_dir, think=False)
    output = tmp_path / "results"
    with registered([meta]):
        model = mteb.get_model(meta.name)
        mteb.evaluate(model, beir_task(beir_dir, name="TinyBeir"), cache=mteb.ResultCache(output),
                      co2_tracker=False, show_progress_bar=False)
    assert model.module.stats["thoughts_generated"] == 0
    path = next(output.rglob("TinyBeir.json"))
    assert path.parent.parent.name == "experiments" and path.parent.name == "think_False"

    own = evaluate_dense(load_model(str(model_dir)), load_beir(beir_dir), name="own",
                         query_kwargs={"think": False})
    assert scores_of(json.loads(path.read_text()))["ndcg_at_10"] == pytest.approx(own["metrics"]["ndcg@10"], abs=1e-4)


def test_wrapper_around_in_memory_model(tiny_model, beir_dir, tmp_path):
    import warnings

    tiny_model[0].configure(max_new_tokens=4)
    prompts = dict(tiny_model.prompts)
    assert {"search_query", "passage"} <= set(prompts)  # the names other frameworks send
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = O1EmbedderEncoderWrapper(tiny_model, num_thoughts=1, query_batch_size=2)
    assert not [w for w in caught if "prompt" in str(w.message)]  # mteb is shown only query and document
    assert tiny_model.prompts == prompts and set(model.model_prompts) == {"query", "document"}
    assert model.module.num_thoughts == 1
    assert model.mteb_model_meta.embed_dim == 64 and model.mteb_model_meta.experiment_kwargs == {
        "num_thoughts": 1, "query_batch_size": 2}
    mteb.evaluate(model, beir_task(beir_dir, name="TinyBeir"), cache=None, co2_tracker=False,
                  show_progress_bar=False)
    assert model.module.stats["thoughts_generated"] == 5
    assert model.module.stats["generate_calls"] == 3  # 5 queries in batches of 2
    with pytest.raises(ValueError, match="batch_size"):
        O1EmbedderEncoderWrapper(tiny_model, batch_size=0)
    with pytest.raises(ValueError, match="query_batch_size"):
        O1EmbedderEncoderWrapper(tiny_model, query_batch_size=-1)


def test_run_mteb_cli_on_local_beir_task(model_dir, beir_dir, tmp_path, capsys):
    output, data = tmp_path / "cli-results", tmp_path / "beir"
    shutil.copytree(beir_dir, data)
    argv = ["run", "-m", str(model_dir), "--beir-task", f"TinyCli={data}", "--output-folder", str(output),
            "--no-co2-tracker", "--batch-size", "8", "--num-thoughts", "1", "-v", "0"]
    assert run_mteb_cli(argv) == 0
    path = next(output.rglob("TinyCli.json"))
    assert path.parent.name == "num_thoughts_1"
    assert path.parents[2].name == folder_revision(model_dir)
    assert path.parents[3].name == "local__tiny-o1-num_thoughts_1"  # mteb's tables average experiments of one name
    assert 0.0 <= scores_of(json.loads(path.read_text()))["ndcg_at_10"] <= 1.0
    # edited judgments: mteb would report the old scores again, so the run is refused until told to overwrite
    before = json.loads(path.read_text())["dataset_revision"]
    qrels = data / "qrels" / "test.tsv"
    qrels.write_text("\n".join(qrels.read_text().splitlines()[:-1]) + "\n")
    assert run_mteb_cli(argv) == 2
    assert "other files" in capsys.readouterr().err
    assert run_mteb_cli([*argv, "--overwrite-strategy", "always"]) == 0
    assert json.loads(path.read_text())["dataset_revision"] not in (before, None)
    # registrations are undone when the command ends
    with pytest.raises(KeyError):
        mteb.get_model_meta("local/tiny-o1")
    with pytest.raises(KeyError):
        mteb.get_task("TinyCli")


def test_run_mteb_cli_errors(model_dir, beir_dir, tmp_path, capsys):
    out = ["--output-folder", str(tmp_path / "o"), "--no-co2-tracker"]
    assert run_mteb_cli(["run", "-m", str(tmp_path / "missing"), "--beir-task", str(beir_dir), *out]) == 2
    assert "not found" in capsys.readouterr().err
    assert run_mteb_cli(["run", "-m", str(model_dir), "--beir-task", f"SciFact={beir_dir}", *out]) == 2
    assert "mteb's own tasks" in capsys.readouterr().err
    assert run_mteb_cli(["run", "-m", str(model_dir), "--beir-task", str(tmp_path / "nope"), *out]) == 2
    assert "BEIR folder not found" in capsys.readouterr().err
    assert run_mteb_cli(["run", "--num-thoughts", "x"]) == 2
    assert run_mteb_cli(["run", "-m", str(model_dir), "--beir-task", str(beir_dir), "--top-p", "2", *out]) == 2
    assert "top_p" in capsys.readouterr().err
    assert run_mteb_cli(["run", "-m", str(model_dir), "--beir-task", str(beir_dir), "--num-thoughts", "0", *out]) == 2
    assert "num_thoughts" in capsys.readouterr().err
    assert run_mteb_cli(["run", "-m", "mteb/baseline-random-encoder", "--beir-task", str(beir_dir), "--no-think",
                         *out]) == 2
    assert "mteb's own models" in capsys.readouterr().err
    assert not list(tmp_path.glob("o/**/*.json"))
    with pytest.raises(KeyError):
        mteb.get_model_meta("local/tiny-o1")


def test_think_and_no_think_stay_apart_in_mtebs_tables(model_dir, beir_dir, tmp_path):
    """mteb's own loaders tell the two runs apart: two result files, two rows of to_dataframe, never averaged."""
    output = tmp_path / "cli-results"
    common = ["run", "-m", str(model_dir), "--beir-task", f"TinyCli={beir_dir}", "--output-folder", str(output),
              "--no-co2-tracker", "--batch-size", "8", "-v", "0"]
    assert run_mteb_cli(common) == 0
    assert run_mteb_cli([*common, "--no-think"]) == 0
    files = sorted(output.rglob("TinyCli.json"))
    assert len(files) == 2
    scores = sorted(scores_of(json.loads(p.read_text()))["ndcg_at_10"] for p in files)
    results = mteb.ResultCache(cache_path=output).load_results(include_remote=False, load_experiments="match_name")
    frame = results.to_dataframe(format="long")
    assert sorted(frame["model_name"]) == ["local/tiny-o1", "local/tiny-o1-think_False"]
    assert sorted(frame["score"]) == pytest.approx(scores)
