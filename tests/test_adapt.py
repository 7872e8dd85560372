"""Zero-label domain adaptation (``o1-embedder adapt``) end to end on tiny models: stages, resume, leaks, bad input."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from o1_embedder.data.corpus import CorpusError, load_corpus
from o1_embedder.pipeline.adapt import AdaptConfig, adapt
from o1_embedder.pipeline.runner import RunError

DATA_DIR = Path(__file__).resolve().parents[1] / "o1_embedder" / "datasets" / "cranfield"


@pytest.fixture(scope="module")
def tiny_o1(tmp_path_factory, tiny_backbone) -> Path:
    """A saved tiny o1-embedder model (greedy thoughts of up to 6 tokens, query weight 0.5 like the default)."""
    from o1_embedder import build_model, save_model

    model = build_model(str(tiny_backbone), num_thoughts=1, generation={"do_sample": False, "max_new_tokens": 6},
                        max_query_tokens=16, max_document_tokens=48, query_weight=0.5)
    return save_model(model, tmp_path_factory.mktemp("adapt") / "tiny-o1")


@pytest.fixture(scope="module")
def beir(tmp_path_factory) -> Path:
    """A BEIR folder of 40 Cranfield documents with the queries judged on them."""
    root = tmp_path_factory.mktemp("beir")
    (root / "qrels").mkdir()
    lines = [line for line in (DATA_DIR / "corpus.jsonl").read_text().splitlines() if json.loads(line)["text"]][:40]
    ids = {json.loads(line)["_id"] for line in lines}
    qrels = [q for q in (DATA_DIR / "qrels" / "test.tsv").read_text().splitlines()[1:] if q.split("\t")[1] in ids]
    qids = {q.split("\t")[0] for q in qrels}
    queries = [q for q in (DATA_DIR / "queries.jsonl").read_text().splitlines() if json.loads(q)["_id"] in qids]
    (root / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    (root / "queries.jsonl").write_text("\n".join(queries) + "\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(qrels) + "\n")
    return root


def config(corpus, out, model, **changes) -> AdaptConfig:
    settings = dict(corpus=str(corpus), out=str(out), model=str(model), train_queries=24, batch_size=8,
                    teacher=["bm25"], negatives=3, candidates=2, passage_tokens=96, save_steps=1, dtype="float32",
                    writer_batch_size=16)
    return AdaptConfig(**{**settings, **changes})


def weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(path.rglob("*.safetensors"))
    assert files, f"no weights in {path}"
    return {f"{f.name}:{k}": v for f in files for k, v in load_file(f).items()}


@pytest.fixture(scope="module")
def adapted(tmp_path_factory, beir, tiny_o1) -> Path:
    out = tmp_path_factory.mktemp("runs") / "full"
    adapt(config(beir, out, tiny_o1, eval=True))
    return out


def test_adapt_end_to_end(adapted, beir, tiny_o1):
    from o1_embedder import load_model

    run = json.loads((adapted / "run.json").read_text())
    corpus = load_corpus(beir)
    assert run["corpus"]["sha256"] == corpus.sha256 and run["corpus"]["documents"] == 40
    for stage in ("queries", "mine", "teacher", "synth", "vote", "train", "eval"):
        assert (adapted / "done" / stage).is_file(), stage
    timings = json.loads((adapted / "timings.json").read_text())
    assert set(timings) == {"queries", "mine", "teacher", "synth", "vote", "train", "eval"}
    counts = json.loads((adapted / "pseudo_queries.json").read_text())
    assert counts["queries"] == sum(counts["by_kind"].get(k, 0) for k in ("question", "title", "sentence"))
    from o1_embedder.synthesis.queries import clean_question

    written = [json.loads(line) for line in (adapted / "questions.jsonl").read_text().splitlines()]
    for r in written:  # an unusable greedy question gets 3 sampled tries, the first usable one is kept
        assert r["tries"] == [] if clean_question(r["raw"]) else len(r["tries"]) == 3
        assert r["question"] == next((q for q in map(clean_question, [r["raw"], *r["tries"]]) if q), "")
    assert any(r["tries"] for r in written)  # the tiny model's greedy questions are loops
    assert counts["by_kind"]["question_resampled"] == sum(bool(r["tries"] and r["question"]) for r in written)
    records = [json.loads(line) for line in (adapted / "train.jsonl").read_text().splitlines()]
    assert len(records) >= 10
    docs = set(corpus.full_texts())
    for r in records:
        assert r["neg"] and all(n in docs for n in r["neg"])  # negatives are documents of the corpus
        assert r["doc_id"] in corpus.ids
        source = corpus.full_texts()[corpus.ids.index(r["doc_id"])]
        assert source not in r["neg"]  # never the query's own document
        assert len(r["pos_scores"]) == 1 and len(r["neg_scores"]) == len(r["neg"])
    # the adapted model is a model folder: it loads and differs from the one it started from
    model = load_model(str(adapted / "model"))
    assert model[0].query_weight == 0.0 != load_model(str(tiny_o1))[0].query_weight  # adapt's, not the start's
    adapter_settings = json.loads((adapted / "adapter" / "o1_embedder_config.json").read_text())
    assert adapter_settings["query_weight"] == 0.0
    # documents are read as training read them (passage_tokens 96), not at the start's 48
    assert model[0].max_document_tokens == 96 == adapter_settings["max_document_tokens"]
    assert load_model(str(tiny_o1))[0].max_document_tokens == 48
    emb = model.encode_document(["the boundary layer of a wing"])
    assert emb.shape[1] == model.get_embedding_dimension()
    before, after = weights(tiny_o1), weights(adapted / "model")
    assert any(not torch.equal(before[k], after[k]) for k in before if k in after)
    card = (adapted / "model" / "README.md").read_text()
    assert corpus.sha256 in card and "## Domain adaptation" in card and "adapted (think)" in card
    assert f"{len(records)} with teacher scores" in card and "stage times" in card
    assert "read up to 96 tokens" in card
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(adapted / "model"), trust_remote_code=True)  # the ecosystem's loader too
    assert st.max_seq_length == 96
    assert torch.allclose(st.encode_document(["a wing"], convert_to_tensor=True),
                          model.encode_document(["a wing"], convert_to_tensor=True), atol=1e-5)
    results = json.loads((adapted / "eval" / "results.json").read_text())
    names = [r["name"] for r in results["results"]] if isinstance(results, dict) else [r["name"] for r in results]
    assert {"before (think)", "adapted (think)", "adapted (no think)", "BM25"} <= set(names)


def test_resume_after_a_kill_gives_the_same_result(adapted, beir, tiny_o1, tmp_path):
    """Stopped after mining, then a half-written synthesis file (a kill mid-stage): the resumed run ends with the
    same training data and the same weights as the run that was never stopped."""
    out = tmp_path / "resumed"
    adapt(config(beir, out, tiny_o1, eval=True, stop_after="synth"))
    assert not (out / "done" / "vote").exists()
    lines = (out / "candidates.jsonl").read_text().splitlines(keepends=True)
    (out / "candidates.jsonl").write_text("".join(lines[:len(lines) // 2]) + lines[len(lines) // 2][:20])
    (out / "done" / "synth").unlink()  # killed before the stage finished
    adapt(config(beir, out, tiny_o1, eval=True))
    assert (out / "train.jsonl").read_text() == (adapted / "train.jsonl").read_text()
    a, b = weights(adapted / "model"), weights(out / "model")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_no_stage_before_eval_opens_queries_or_judgments(beir, tiny_o1, tmp_path):
    opened: list[str] = []
    watching = [True]

    def hook(event, args):
        if watching[0] and event == "open" and args and isinstance(args[0], (str, bytes, Path)):
            opened.append(str(args[0]))

    sys.addaudithook(hook)  # audit hooks stay for the process: this one records only while watching[0]
    try:
        adapt(config(beir, tmp_path / "run", tiny_o1, eval=True, stop_after="train"))
    finally:
        watching[0] = False
    assert any(p.endswith("corpus.jsonl") for p in opened)  # the hook sees the files the stages read
    leaks = [p for p in opened if p.startswith(str(beir)) and (p.endswith("queries.jsonl") or "qrels" in p)]
    assert not leaks, leaks


def test_changed_settings_or_corpus_on_resume_are_refused(beir, tiny_o1, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    shutil.copy(beir / "corpus.jsonl", corpus)
    out = tmp_path / "run"
    adapt(config(corpus, out, tiny_o1, stop_after="queries"))
    with pytest.raises(RunError, match="other settings.*train_queries"):
        adapt(config(corpus, out, tiny_o1, train_queries=30))
    with open(corpus, "a") as f:
        f.write(json.dumps({"_id": "new", "text": "a new document about shock waves"}) + "\n")
    with pytest.raises(RunError, match="changed since"):
        adapt(config(corpus, out, tiny_o1))


@pytest.mark.parametrize("content, message", [
    ("", "no document"),
    ('{"_id": "a", "text": "one"}\n{"_id": "a", "text": "two"}\n', "duplicate _id 'a'"),
    ('{"_id": "a", "text": "bin\\u0000ary"}\n', "looks binary"),
    ('{"_id": "a", "text": 5}\n', "field 'text' must be a string"),
    ('{"_id": "a", "text": "one"}\n{"_id": "b", "text": "two"}\n', "at least 8 are needed"),
])
def test_bad_corpus_is_refused_before_any_model_loads(tmp_path, content, message):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(content)
    missing_model = tmp_path / "no-such-model"  # loading it would fail with another message
    with pytest.raises(CorpusError, match=message):
        adapt(config(corpus, tmp_path / "run", missing_model))
    assert not (tmp_path / "run").exists()


def test_output_folder_with_other_files_is_refused(beir, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="not an o1-embedder adapt run folder"):
        adapt(config(beir, out, tmp_path / "no-such-model"))
    assert (out / "notes.txt").read_text() == "mine"


def test_folder_corpus_and_empty_documents(tmp_path):
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "a.md").write_text("# Wing flutter\n\nFlutter of wings at transonic speed. It grows.\n")
    (root / "sub" / "b.txt").write_text("Heat transfer in a laminar boundary layer.")
    (root / "empty.txt").write_text("  \n")
    (root / "skip.bin").write_bytes(b"\x00\x01")
    corpus = load_corpus(root)
    assert corpus.ids == ["a.md", "sub/b.txt"] and corpus.titles == ["Wing flutter", ""]
    assert corpus.texts[0].startswith("Flutter of wings") and corpus.empty == [str(root / "empty.txt")]
    (root / "c.txt").write_bytes(b"caf\xe9")
    with pytest.raises(CorpusError, match="c.txt: not valid UTF-8"):
        load_corpus(root)


def test_plan_rotates_kinds_and_caps_queries(beir):
    from o1_embedder.pipeline.adapt import _plan

    corpus = load_corpus(beir)
    slots = _plan(corpus, config(beir, "x", "m", train_queries=60, passage_tokens=128))
    assert len(slots) == 60 and len(set(slots)) == 60  # a document at most once per kind
    kinds = [k for _, k in slots[:30]]
    assert all(kinds.count(k) >= 6 for k in ("question", "title", "sentence")), kinds


@pytest.mark.parametrize("raw, kept", [
    ("Question: How does wall cooling change boundary layer transition?\nmore", "How does wall cooling change "
     "boundary layer transition?"),
    ("What is the flow past a cone, and what is the drag of the cone?", "What is the flow past a cone, and what is "
     "the drag of the cone?"),  # one repeated trigram of a longer question is a question
    ("What is the passage about solar flares?", "What is the passage about solar flares?"),
    ("What is the accuracy of the accuracy of the accuracy of the accuracy of the accuracy of", ""),
    ("What is the flow in the Mach 4 working section of the Mach 4 nozzle Mach 4 Mach 4 Mach 4 Mach 4", ""),
    ("What is the answer to this question: what is the answer to this question?", ""),
    ("What is the passage about?", ""),
    ("What is the question?", ""),
    ("Too short", ""),
])
def test_written_questions_without_loops_or_questions_about_the_prompt(raw, kept):
    from o1_embedder.synthesis.queries import clean_question

    assert clean_question(raw) == kept


def test_teacher_fuses_members_and_its_committee_reuses_corpus_embeddings(beir, tmp_path):
    import numpy as np

    from o1_embedder.synthesis.teacher import CorpusTeacher
    from o1_embedder.synthesis.vote import DenseMember, load_committee

    texts = load_corpus(beir).full_texts()[:20]
    queries = ["boundary layer transition on a flat plate", "heat transfer in hypersonic flow"]
    fused = CorpusTeacher(texts, ["bm25", "all-MiniLM-L6-v2"], cache_dir=str(tmp_path))
    parts = [CorpusTeacher(texts, [m]).scores(queries) for m in ("bm25", "all-MiniLM-L6-v2")]
    for part in parts:  # each member standardised over the corpus for each query
        assert np.allclose(part.mean(axis=1), 0, atol=1e-4) and np.allclose(part.std(axis=1), 1, atol=1e-3)
    assert np.allclose(fused.scores(queries), (parts[0] + parts[1]) / 2, atol=1e-4)
    top, _ = fused.search(queries, 5)
    assert top.shape == (2, 5) and (top[:, 0] == fused.scores(queries).argmax(axis=1)).all()
    assert len(list(tmp_path.glob("*.npy"))) == 1  # the corpus embeddings are cached on disk

    group = [(queries, texts[:6])]
    remembered = [m for m in fused.committee() if isinstance(m, DenseMember)][0]
    fresh = [m for m in load_committee(["all-MiniLM-L6-v2"]) if isinstance(m, DenseMember)][0]
    calls = []
    encode = remembered.model.encode_document
    remembered.model.encode_document = lambda texts, **kw: calls.append(len(texts)) or encode(texts, **kw)
    assert np.allclose(remembered.score(group)[0], fresh.score(group)[0], atol=1e-5)
    assert calls == []  # remembered passages are never encoded again: only the queries are


def test_reuse_takes_the_complete_data_stages_for_a_training_ablation(adapted, beir, tiny_o1, tmp_path):
    out = tmp_path / "arm"
    adapt(config(beir, out, tiny_o1, learning_rate=1e-4, reuse=str(adapted)))
    for stage in ("queries", "mine", "teacher", "synth", "vote"):
        assert (out / "done" / stage).is_file()
    assert (out / "train.jsonl").read_text() == (adapted / "train.jsonl").read_text()
    assert json.loads((out / "model" / "training_config.json").read_text())["learning_rate"] == 1e-4
    other = tmp_path / "other.jsonl"
    other.write_text((beir / "corpus.jsonl").read_text().replace("the", "a", 1))
    with pytest.raises(RunError, match="made from another corpus"):
        adapt(config(other, tmp_path / "arm2", tiny_o1, reuse=str(adapted)))
    changed = tmp_path / "arm3"  # other data settings: nothing is taken, every stage runs
    adapt(config(beir, changed, tiny_o1, negatives=2, stop_after="mine", reuse=str(adapted)))
    assert json.loads((changed / "mined.jsonl").read_text().splitlines()[0])["neg"].__len__() <= 2


def test_checkpointing_is_not_a_setting_the_run_depends_on(adapted, beir, tiny_o1, tmp_path):
    """A run killed for memory resumes with more gradient checkpointing; another learning rate is refused."""
    out = tmp_path / "run"
    shutil.copytree(adapted, out)
    recorded = json.loads((out / "run.json").read_text())["stages"]["train"]
    assert "learning_rate" in recorded and "checkpoint_every_n_layers" not in recorded
    adapt(config(beir, out, tiny_o1, gradient_checkpointing=False))
    adapt(config(beir, out, tiny_o1, checkpoint_every_n_layers=1))
    with pytest.raises(RunError, match="other settings.*learning_rate"):
        adapt(config(beir, out, tiny_o1, learning_rate=1e-4))


def test_in_batch_distillation_trains_from_a_table_of_the_run_s_records(adapted, beir, tiny_o1, tmp_path):
    """By default the train stage scores every training query against every training passage once, and trains
    from that table; --no-in-batch-distillation trains from each record's own scores."""
    from o1_embedder.training.teacher_table import TeacherTable

    records = [json.loads(line) for line in (adapted / "train.jsonl").read_text().splitlines()]
    table = TeacherTable.load(adapted / "teacher_table.npz")
    passages = {p for r in records for p in [r["pos"][0], *r["neg"]]}
    assert table.missing({r["query"] for r in records}, passages) == ([], [])
    assert table.scores.shape == (len({r["query"] for r in records}), len(passages))
    # a query's own teacher scores (the teacher stage's) are the table's for the same pairs
    first = records[0]
    assert table.lookup([first["query"]], [first["pos"][0], *first["neg"]]).flatten().tolist() == pytest.approx(
        first["pos_scores"] + first["neg_scores"], abs=1e-4)
    assert json.loads((adapted / "run.json").read_text())["stages"]["train"]["in_batch_distillation"] is True
    assert json.loads((adapted / "model" / "training_config.json").read_text())["teacher_table"] == str(
        adapted / "teacher_table.npz")
    out = tmp_path / "own-groups"
    adapt(config(beir, out, tiny_o1, in_batch_distillation=False, reuse=str(adapted)))
    assert not (out / "teacher_table.npz").exists()
    assert json.loads((out / "model" / "training_config.json").read_text())["teacher_table"] is None
    with pytest.raises(ValueError, match="teacher without a cross-encoder.*--no-in-batch-distillation"):
        config(beir, tmp_path / "x", tiny_o1, teacher=["bm25", "cross-encoder:some/ce"])
    assert config(beir, tmp_path / "x", tiny_o1, teacher=["bm25", "cross-encoder:some/ce"],
                  in_batch_distillation=False).train_config().teacher_table is None
    assert config(beir, tmp_path / "x", tiny_o1, distillation_weight=0.0).train_config().teacher_table is None


def test_a_run_recorded_before_in_batch_distillation_resumes_as_it_trained(adapted, beir, tiny_o1, tmp_path):
    """A run folder whose record has no in_batch_distillation trained each query's own group: resuming it needs
    --no-in-batch-distillation, and the new default is refused rather than mixed in."""
    out = tmp_path / "older"
    shutil.copytree(adapted, out)
    record = json.loads((out / "run.json").read_text())
    del record["stages"]["train"]["in_batch_distillation"]
    (out / "run.json").write_text(json.dumps(record))
    with pytest.raises(RunError, match="train: in_batch_distillation False -> True"):
        adapt(config(beir, out, tiny_o1))
    assert "in_batch_distillation" not in json.loads((out / "run.json").read_text())["stages"]["train"]
    adapt(config(beir, out, tiny_o1, in_batch_distillation=False))


def test_document_truncation_of_the_adapted_model(adapted, beir, tiny_o1, tmp_path):
    """The adapted model reads documents at --document-tokens (default: --passage-tokens); 0 keeps the start's;
    a value beyond the backbone's context fails before training. A run recorded before the setting kept the
    start's: it resumes with 0, the new default is refused."""
    assert config(beir, tmp_path / "x", tiny_o1).train_config().max_document_tokens == 96
    assert config(beir, tmp_path / "x", tiny_o1, document_tokens=0).train_config().max_document_tokens is None
    with pytest.raises(ValueError, match="document_tokens must be an integer >= 0"):
        config(beir, tmp_path / "x", tiny_o1, document_tokens=-1)
    from o1_embedder import load_model

    kept = tmp_path / "kept"
    adapt(config(beir, kept, tiny_o1, document_tokens=0, reuse=str(adapted)))
    assert load_model(str(kept / "model"))[0].max_document_tokens == 48
    assert "read as the starting model reads them" in (kept / "model" / "README.md").read_text()
    with pytest.raises(ValueError, match="max_document_tokens=1000000 .* exceed the backbone's context"):
        adapt(config(beir, tmp_path / "long", tiny_o1, document_tokens=10**6, reuse=str(adapted)))
    assert not (tmp_path / "long" / "done" / "train").exists() and not (tmp_path / "long" / "model").exists()
    out = tmp_path / "older"
    shutil.copytree(adapted, out)
    record = json.loads((out / "run.json").read_text())
    assert record["stages"]["train"]["document_tokens"] == 96
    del record["stages"]["train"]["document_tokens"]
    (out / "run.json").write_text(json.dumps(record))
    with pytest.raises(RunError, match="train: document_tokens 0 -> 96"):
        adapt(config(beir, out, tiny_o1))
    adapt(config(beir, out, tiny_o1, document_tokens=0))
