"""Fault injection: nothing lost, nothing poisoned, validation before work, a cache that never breaks encoding.

Each test names the case it keeps fixed (numbers as in the fault report this suite answers).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch
from conftest import DOCUMENTS, QUERIES
from helpers import make_records, write_jsonl
from synth_helpers import FakeOpenAIServer, one_thread, records  # noqa: F401  (fixture)

from o1_embedder import ThoughtCache, build_model, load_model, save_model
from o1_embedder.cli import main
from o1_embedder.data import BeirFormatError, load_beir
from o1_embedder.data.records import JsonlWriter, RecordFormatError
from o1_embedder.generation.cache import ThoughtCacheWarning
from o1_embedder.training import TrainConfig, train


@pytest.fixture()
def model(tiny_greedy_model):
    return tiny_greedy_model


@pytest.fixture()
def saved(model, tmp_path):
    return save_model(model, tmp_path / "model")


# ------------------------------------------------------------------------------- 1. saves never destroy
def test_1_save_refuses_a_folder_it_did_not_write(model, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.md").write_text("my notes")
    (folder / "data.csv").write_text("a,b")
    with pytest.raises(FileExistsError, match="not an o1-embedder model folder.*data.csv, notes.md"):
        save_model(model, folder)
    assert (folder / "notes.md").read_text() == "my notes"
    save_model(model, folder, force=True)  # explicit
    assert (folder / "modules.json").exists() and not (folder / "notes.md").exists()


def test_1_save_never_turns_a_file_into_a_folder(model, tmp_path):
    target = tmp_path / "r.csv"
    target.write_text("keep me")
    for force in (False, True):
        with pytest.raises(FileExistsError, match="not a folder"):
            save_model(model, target, force=force)
    assert target.read_text() == "keep me"


def test_1_save_replaces_an_earlier_model_and_refuses_the_input(model, saved):
    save_model(model, saved)  # an o1-embedder model folder: replaced
    with pytest.raises(ValueError, match="also the input model"):
        save_model(model, saved, inputs=(saved,))
    assert (saved / "modules.json").exists()
    inside = saved / "checkpoint"  # e.g. convert out/checkpoint out --force: replacing out would delete the input
    inside.mkdir()
    for force in (False, True):
        with pytest.raises(ValueError, match="inside"):
            save_model(model, saved, force=force, inputs=(inside,))
    assert inside.is_dir() and (saved / "modules.json").exists()


def test_1_train_output_checked_before_training(saved, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", make_records(4))
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.md").write_text("x")
    started = time.perf_counter()
    with pytest.raises(FileExistsError, match="notes.md"):
        train(TrainConfig(data=str(data), output=str(occupied), model=str(saved), lora_r=4, num_negatives=1))
    assert time.perf_counter() - started < 5  # refused up front, not after training
    assert main(["convert", str(saved), str(tmp_path / "r.csv")]) == 0  # a new folder is fine
    (tmp_path / "f.csv").write_text("x")
    assert main(["convert", str(saved), str(tmp_path / "f.csv")]) == 2
    assert (tmp_path / "f.csv").read_text() == "x"
    assert main(["init", str(occupied)]) == 2 and (occupied / "notes.md").exists()


# ------------------------------------------------------------------ 2. output equal to input: refused
def test_2_output_equal_to_input_is_refused_even_with_overwrite(tmp_path, capsys):
    same = write_jsonl(tmp_path / "same.jsonl", [{**r, "candidates": ["a", "b"]} for r in records(5)])
    before = same.read_bytes()
    for command in (["synth", str(same), "-o", str(same), "--overwrite", "--backend", "openai",
                     "--base-url", "http://127.0.0.1:9/v1", "--model", "m"],
                    ["vote", str(same), "-o", str(same), "--overwrite"],
                    ["mine", str(same), "-o", str(same), "--overwrite"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "also the input" in err and "--overwrite" not in err.split("error:")[1]
        assert same.read_bytes() == before


def test_2_synth_and_vote_refuse_a_foreign_output_before_loading_models(tmp_path, capsys, monkeypatch):
    import o1_embedder.cli as cli
    import o1_embedder.synthesis.vote as vote

    def never(*args, **kwargs):
        raise AssertionError("models were loaded before the output was checked")

    monkeypatch.setattr(vote, "load_committee", never)
    monkeypatch.setattr(cli, "_backend", never)
    source = write_jsonl(tmp_path / "in.jsonl", [{**r, "candidates": ["a", "b"]} for r in records(3)])
    foreign = tmp_path / "queries.jsonl"
    foreign.write_text('{"_id": "q1", "text": "lift"}\n{"_id": "q2", "text": "drag"}')  # no final newline
    for command in (["synth", str(source), "-o", str(foreign)], ["vote", str(source), "-o", str(foreign)]):
        assert main(command) == 2
        assert f"{foreign}:1:" in capsys.readouterr().err
        assert foreign.read_text() == '{"_id": "q1", "text": "lift"}\n{"_id": "q2", "text": "drag"}'


# -------------------------------------------------------------- 3./4. validation before training
def test_3_non_finite_teacher_scores_are_refused_with_file_and_line(saved, tmp_path):
    rows = make_records(4, with_scores=True)
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:2])
                    + json.dumps(rows[2]).replace('"neg_scores": [0.0', '"neg_scores": [NaN') + "\n")
    with pytest.raises(RecordFormatError, match=r"d.jsonl:3: field 'neg_scores' holds a non-finite number"):
        train(TrainConfig(data=str(path), output=str(tmp_path / "out"), model=str(saved), num_negatives=1,
                          distillation_weight=0.5))
    assert not (tmp_path / "out").exists()


def test_4_a_record_without_negatives_is_found_before_training(saved, tmp_path):
    rows = make_records(6)
    del rows[4]["neg"]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(RecordFormatError, match=r"d.jsonl:5: missing field 'neg'"):
        train(TrainConfig(data=str(path), output=str(tmp_path / "out"), model=str(saved), num_negatives=2))
    # without hard negatives the same file trains
    assert train(TrainConfig(data=str(path), output=str(tmp_path / "ok"), model=str(saved), num_negatives=0,
                             max_steps=1, lora_r=4, batch_size=2)).path.exists()


# ----------------------------------------------------------------- 5. the thought cache never breaks
def _encode_with(model, cache):
    model[0].thought_cache = cache
    return model.encode_query(QUERIES[:2], convert_to_tensor=True)


def _one_warning(record) -> str:
    messages = [str(w.message) for w in record if issubclass(w.category, ThoughtCacheWarning)]
    assert len(messages) == 1, messages
    return messages[0]


def test_5_corrupt_cache_file(model, tmp_path):
    path = tmp_path / "thoughts.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    expected = _encode_with(model, None)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        cache = ThoughtCache(path)
        first = _encode_with(model, cache)
        again = _encode_with(model, cache)
    assert str(path) in _one_warning(record)
    assert torch.allclose(first, expected, atol=1e-5) and torch.allclose(again, expected, atol=1e-5)
    assert model[0].stats["thoughts_from_cache"] == 2  # kept in memory


def test_5_misplaced_cache_and_read_only_home(model, tmp_path, monkeypatch):
    blocker = tmp_path / "home-is-a-file"
    blocker.write_text("")
    for path in (tmp_path, blocker / "cache" / "thoughts.sqlite"):  # a folder in its place; an impossible parent
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            out = _encode_with(model, ThoughtCache(path))
        assert str(path) in _one_warning(record) and out.shape[0] == 2
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    monkeypatch.delenv("O1_EMBEDDER_THOUGHT_CACHE", raising=False)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        cache = ThoughtCache.from_env()
        assert _encode_with(model, cache).shape[0] == 2
    _one_warning(record)


def test_5_read_only_cache_still_serves_its_thoughts(model, tmp_path, monkeypatch):
    path = tmp_path / "t.sqlite"
    first = _encode_with(model, ThoughtCache(path))
    calls = model[0].stats["generate_calls"]
    real_connect = ThoughtCache._connect

    def read_only(self, read_only=False):
        if not read_only:
            raise sqlite3.OperationalError("attempt to write a readonly database")
        return real_connect(self, read_only=True)

    monkeypatch.setattr(ThoughtCache, "_connect", read_only)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        cache = ThoughtCache(path)
        again = _encode_with(model, cache)
        other = model.encode_query(["a query that is not cached"], convert_to_tensor=True)
    assert "cannot be written" in _one_warning(record)
    assert torch.allclose(first, again, atol=1e-5) and model[0].stats["generate_calls"] == calls + 1
    assert other.shape[0] == 1 and cache.in_memory


def test_5_locked_cache(model, tmp_path):
    path = tmp_path / "t.sqlite"
    ThoughtCache(path)
    holder = sqlite3.connect(path)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            out = _encode_with(model, ThoughtCache(path, timeout=0.05))
        assert "locked" in _one_warning(record) and out.shape[0] == 2
    finally:
        holder.rollback()
        holder.close()


# -------------------------------------------------------------------- 6. eval writes what it scored
def test_6_eval_checks_output_first_and_reports_before_a_failing_comparison(saved, tmp_path, monkeypatch):
    from o1_embedder.evaluation.job import EvalSettings, run_eval

    target = tmp_path / "report.txt"
    target.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        run_eval("cranfield", target, EvalSettings(model=str(saved), compare=[]))
    out = tmp_path / "report"
    settings = EvalSettings(model=str(saved), compare=["no-such-model-xyz"], max_queries=3, max_docs=40,
                            cache_dir=str(tmp_path / "c"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="without these comparisons: no-such-model-xyz"):
        run_eval("cranfield", out, settings, log=lambda *_: None)
    report = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in report["results"]] == ["o1-embedder (think)", "o1-embedder (no think)", "BM25"]


# ------------------------------------------------------- 7. synthesis under a dead or slow server
def test_7_dead_server_stops_the_run_with_one_message(tmp_path, capsys):
    source = write_jsonl(tmp_path / "in.jsonl", records(40))
    out = tmp_path / "out.jsonl"
    started = time.perf_counter()
    code = main(["synth", str(source), "-o", str(out), "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1",
                 "--model", "m", "--max-retries", "0", "--timeout", "1", "--few-shot", "0", "--concurrency", "4"])
    assert code == 2 and time.perf_counter() - started < 20
    err = capsys.readouterr().err
    assert "requests in a row failed" in err and err.count("error:") == 1


def test_7_close_does_not_wait_for_requests_in_flight():
    from o1_embedder.generation.backends import GenerationRequest
    from o1_embedder.generation.openai_backend import OpenAIBackend
    from o1_embedder.generation.settings import GenerationSettings

    with FakeOpenAIServer(slow=("slow",), slow_seconds=8.0) as server:
        backend = OpenAIBackend(server.url, model="fake-model",
                                settings=GenerationSettings(max_new_tokens=4, temperature=0.7),
                                concurrency=2, timeout=30)
        requests = [GenerationRequest([{"role": "user", "content": f"Query: slow {i}"}]) for i in range(4)]
        results = []
        thread = threading.Thread(target=lambda: results.extend(backend.generate_iter(requests)), daemon=True)
        thread.start()
        time.sleep(0.5)
        started = time.perf_counter()
        backend.close()  # what Ctrl-C does through the context manager
        assert time.perf_counter() - started < 1.0


def test_7_two_runs_never_write_the_same_output(tmp_path):
    path = tmp_path / "out.jsonl"
    with JsonlWriter(path):
        with pytest.raises(RuntimeError, match="being written by another run"):
            JsonlWriter(path)
    with JsonlWriter(path) as again:  # released on close
        again.write({"query_id": "a"})


# -------------------------------------------------------------------------- 9./10. bad values
def test_9_lone_surrogates_are_refused_where_they_enter(tmp_path, model):
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "a wing"}\n')
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "lift \\ud800 drag"}\n{"_id": "q2", "text": " "}\n')
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t99999999999999999999\n")
    with pytest.raises(BeirFormatError) as err:
        load_beir(folder)
    message = str(err.value)
    assert "queries.jsonl:1: field 'text' is not valid Unicode" in message
    assert "queries.jsonl:2: field 'text' is empty" in message
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "lift"}\n')
    with pytest.raises(BeirFormatError, match=r"test.tsv:2: score 99999999999999999999 is out of range"):
        load_beir(folder)
    with pytest.raises(ValueError, match=r"'bad \\ud800' is not valid Unicode"):
        model.encode_query(["fine", "bad \ud800"])
    records_path = tmp_path / "r.jsonl"
    records_path.write_text('{"query": "q \\udc80", "pos": ["p"]}\n')
    from o1_embedder.data.records import RecordFile

    with pytest.raises(RecordFormatError, match="r.jsonl:1: field 'query' is not valid Unicode"):
        RecordFile(records_path)


def test_9_settings_types_and_ranges(model, saved):
    with pytest.raises((TypeError, ValueError), match="max_seq_length"):
        model.max_seq_length = 0
    config_path = saved / "o1_embedder_config.json"
    config = json.loads(config_path.read_text())
    for key, value, message in (("num_thoughts", "3", "num_thoughts"), ("num_thoughts", 2.5, "num_thoughts"),
                                ("generation", {**config["generation"], "do_sample": "no"}, "do_sample")):
        config_path.write_text(json.dumps({**config, key: value}))
        with pytest.raises(ValueError, match=f"o1_embedder_config.json: .*{message}"):
            load_model(str(saved))
    config_path.write_text("{not json")
    with pytest.raises(ValueError, match="o1_embedder_config.json"):
        load_model(str(saved))


def test_10_corrupt_weights_and_modules_name_the_file(saved):
    weights = saved / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    with pytest.raises((ValueError, OSError), match="model.safetensors"):
        load_model(str(saved))


def test_10_invalid_modules_json_names_the_file(saved):
    (saved / "modules.json").write_text("[{")
    with pytest.raises(ValueError, match="modules.json"):
        load_model(str(saved))


def test_10_large_k_is_decoded_in_bounded_chunks(tiny_backbone):
    m = build_model(str(tiny_backbone), num_thoughts=40, generation={"do_sample": True, "temperature": 1.0,
                                                                      "max_new_tokens": 3, "seed": 1})
    module = m[0]
    module.thought_cache = None
    module.decode_rows = 16
    rows = []
    from o1_embedder.model import thinking as module_file

    real = module_file.decode_and_embed

    def spy(lm, prompts, **kwargs):
        rows.append(len(prompts))
        return real(lm, prompts, **kwargs)

    module_file.decode_and_embed = spy
    try:
        emb = m.encode_query(QUERIES[:2], convert_to_tensor=True)
    finally:
        module_file.decode_and_embed = real
    assert max(rows) <= 16 and sum(rows) == 80 and emb.shape[0] == 2
    assert torch.isfinite(emb).all() and m.encode_document(DOCUMENTS).shape[0] == 3


def test_9_task_names_cannot_leave_the_results_folder(tmp_path):
    from o1_embedder.data import cranfield_path
    from o1_embedder.evaluation.mteb import beir_task_class

    for name in ("../escape", "a/b", "..", ".hidden"):
        with pytest.raises(ValueError, match="plain name"):
            beir_task_class(cranfield_path(), name=name)
    assert beir_task_class(cranfield_path(), name="cranfield-local").metadata.name == "cranfield-local"


def test_settings_edges_found_in_review(model, tmp_path):
    from o1_embedder.evaluation.retrieval import model_fingerprint
    from o1_embedder.generation import GenerationSettings

    assert GenerationSettings(temperature=1).temperature == 1.0  # an int is a float setting, one cache key
    module = model[0]
    module.configure(do_sample=True, temperature=1, num_thoughts=2)
    assert model.encode_query(QUERIES[:1], convert_to_tensor=True).shape[0] == 1
    before = model_fingerprint(model)
    module.configure(num_thoughts=3, max_new_tokens=7, think=False)
    assert model_fingerprint(model) == before  # query-only settings never re-embed a corpus
    model.max_seq_length = 12
    assert model_fingerprint(model) != before
    module.thought_cache = ThoughtCache(tmp_path / "t.sqlite")
    module.configure(seed=None)
    assert module.thought_cache is None  # unseeded sampling: a fresh thought each call, never a cached one
    with pytest.raises(ValueError, match="warmup_ratio"):
        TrainConfig(data="d", output="o", warmup_ratio=1.0)


def test_one_damaged_cache_row_is_a_miss(tmp_path):
    from o1_embedder.generation.cache import CachedThought

    cache = ThoughtCache(tmp_path / "t.sqlite")
    cache.put_many([("good", "q", 0, CachedThought("t", [1, 2], None)), ("bad", "q", 1, CachedThought("t", [3], None))])
    with sqlite3.connect(tmp_path / "t.sqlite") as conn:
        conn.execute("UPDATE thoughts SET embedding = ? WHERE key = 'bad'", (b"abc",))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ThoughtCacheWarning)
        assert list(cache.get_many(["good", "bad"])) == ["good"]
    cache.put_many([("new", "q", 0, CachedThought("t", [4], None))])
    assert "new" in cache.get_many(["new"]) and not cache.in_memory


def test_7_ctrl_c_stops_synthesis_fast_and_leaves_a_resumable_file(tmp_path):
    """Ctrl-C in the middle of a served synthesis run: the process ends within seconds with status 130, every
    line already written is a whole record, and running the same command again completes the rest."""
    import os
    import signal
    import subprocess
    import sys

    source = write_jsonl(tmp_path / "in.jsonl", records(24))
    out = tmp_path / "out.jsonl"
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    with FakeOpenAIServer(slow=("query number",), slow_seconds=0.4, lifetime=300) as server:
        command = [sys.executable, "-m", "o1_embedder.cli", "synth", str(source), "-o", str(out), "--backend", "openai",
                   "--base-url", server.url, "--model", "fake-model", "--few-shot", "0", "--concurrency", "2",
                   "--chunk-size", "2", "-n", "1"]
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 2):
            time.sleep(0.1)
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGINT)
        started = time.monotonic()
        _, err = process.communicate(timeout=30)
        assert time.monotonic() - started < 15, "Ctrl-C took too long"  # about a second on an idle machine
        assert process.returncode == 130, err
        assert "interrupted" in err
        written = [json.loads(line) for line in out.read_text().splitlines()]  # every line a whole record
        assert 2 <= len(written) < 24
        again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
        assert again.returncode == 0, again.stderr
    final = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["query_id"] for r in final) == sorted(f"q{i}" for i in range(24))


# -------------------------------------------------- settings, files and saves found in a second fault review
def test_settings_that_would_give_garbage_are_refused(model):
    from o1_embedder.generation import GenerationSettings

    module = model[0]
    for rows in (0, -1, 2.5, True):
        with pytest.raises((TypeError, ValueError), match="decode_rows"):
            module.decode_rows = rows  # -1 once decoded nothing and returned zero vectors
    assert module.decode_rows == 256
    for temperature in (float("inf"), float("nan"), 1e-300, 1e39):
        with pytest.raises(ValueError, match="temperature"):
            GenerationSettings(do_sample=True, temperature=temperature)
    with pytest.raises(ValueError, match="temperature"):
        GenerationSettings(do_sample=False, temperature=float("inf"))  # would be saved as non-standard JSON
    assert GenerationSettings(do_sample=False, temperature=0.0).greedy  # converted greedy configs keep loading
    for name, value in (("generation_weight", -1.0), ("contrastive_weight", float("nan")),
                        ("learning_rate", float("nan")),
                        ("epochs", float("inf")), ("cached_mini_batch_size", 0), ("max_thought_tokens", -1),
                        ("max_passage_tokens", 0)):
        with pytest.raises(ValueError, match=name):
            TrainConfig(data="d", output="o", **{name: value})
    with pytest.raises(ValueError, match="nothing to train"):
        TrainConfig(data="d", output="o", contrastive_weight=0.0, generation_weight=0.0)


def test_config_file_types_are_checked_at_load(saved):
    config_path = saved / "o1_embedder_config.json"
    config = json.loads(config_path.read_text())
    for change, message in (({"prompt_format": {**config["prompt_format"], "special_tokens": "<emb>"}},
                             "special_tokens"),
                            ({"dtype": "int8"}, "floating-point")):
        config_path.write_text(json.dumps({**config, **change}))
        with pytest.raises(ValueError, match=f"o1_embedder_config.json: .*{message}|{message}"):
            load_model(str(saved))
    config_path.write_text("{}")  # an empty object: every setting at its default, not "no config file"
    assert load_model(str(saved))[0].num_thoughts >= 1


def test_save_never_renames_the_working_directory_or_writes_into_an_input(model, saved, tmp_path, monkeypatch):
    monkeypatch.chdir(saved)
    with pytest.raises(ValueError, match="working directory"):
        save_model(model, ".")
    with pytest.raises(ValueError, match="working directory"):
        save_model(model, saved.parent)
    assert (saved / "o1_embedder_config.json").exists() and not list(saved.parent.glob(".*-old-*"))
    with pytest.raises(ValueError, match="inside the input folder"):
        save_model(model, saved / "sub", inputs=(saved,))
    assert not (saved / "sub").exists()


def test_file_fields_a_float_or_a_trec_line_cannot_hold(tmp_path):
    from o1_embedder.data.records import RecordFile

    path = tmp_path / "b.jsonl"
    path.write_text('{"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": [1' + "0" * 400
                    + '], "neg_scores": [1]}\n')
    with pytest.raises(RecordFormatError, match="b.jsonl:1: field 'pos_scores'"):
        RecordFile(path)
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text('{"_id": "d\\t1", "text": "a"}\n{"_id": "d 2", "text": "b"}\n')
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\n')
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td 2\t1_0\n")
    with pytest.raises(BeirFormatError, match="corpus.jsonl:1: field '_id' 'd\\\\t1' contains a tab"):
        load_beir(beir)
    (beir / "corpus.jsonl").write_text('{"_id": "d1", "text": "a"}\n{"_id": "d 2", "text": "b"}\n')
    with pytest.raises(BeirFormatError, match="test.tsv:2: score must be an integer, got '1_0'"):
        load_beir(beir)
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td 2\t1\n")
    assert load_beir(beir).qrels == {"q1": {"d 2": 1}}  # a space is fine in a tab-separated file


def test_mining_margins_are_checked(capsys, tmp_path):
    from o1_embedder.synthesis.mine import mine_negatives

    for margin in (float("nan"), 1.0, -0.1):
        with pytest.raises(ValueError, match="relative_margin"):
            mine_negatives([{"query": "q", "pos": ["p"]}], model=None, relative_margin=margin)
    code = main(["mine", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "--relative-margin", "nan"])
    assert code == 2 and "relative_margin must be in [0, 1)" in capsys.readouterr().err


def test_unused_positives_are_reported(caplog):
    from o1_embedder.training.data import records_to_dataset

    rows = [{"query": "q1", "pos": ["a", "b", "c"], "neg": ["n"]}, {"query": "q2", "pos": ["d"], "neg": ["n"]}]
    with caplog.at_level("WARNING", logger="o1_embedder.training.data"):
        assert records_to_dataset(rows)["positive"] == ["a", "d"]
    assert "1 of 2 records have more than one positive" in caplog.text and "2 passages unused" in caplog.text


def test_lengths_beyond_the_backbone_context_are_refused(tmp_path):
    from conftest import make_tokenizer
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = make_tokenizer(400)
    torch.manual_seed(0)  # learned absolute positions: past n_positions every forward pass fails
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2, n_positions=40,
                               bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
                    ).save_pretrained(tmp_path / "gpt2")
    tokenizer.save_pretrained(tmp_path / "gpt2")
    greedy = {"do_sample": False, "max_new_tokens": 8}
    with pytest.raises(ValueError, match="max_document_tokens=512 .* context of 40"):
        build_model(str(tmp_path / "gpt2"), num_thoughts=1, generation=greedy, max_query_tokens=8)
    model = build_model(str(tmp_path / "gpt2"), num_thoughts=1, generation=greedy, max_query_tokens=8,
                        max_document_tokens=24)
    model[0].thought_cache = None
    long = " ".join(["wing"] * 200)
    assert model.encode_query([long, "wing"]).shape[0] == 2 and model.encode_document([long]).shape[0] == 1
    with pytest.raises(ValueError, match="max_new_tokens=64"):
        model[0].configure(max_new_tokens=64)
    with pytest.raises(ValueError, match="max_document_tokens=100"):
        model.max_seq_length = 100
    with pytest.raises(ValueError, match="max_query_tokens=30"):
        model[0].configure_lengths(max_query_tokens=30)
    assert model[0].generation["max_new_tokens"] == 8 and model.max_seq_length == 24


def test_saved_folders_and_reports_are_readable_by_others(model, tmp_path):
    import os

    from o1_embedder.files import atomic_write_text

    mask = os.umask(0o022)
    try:
        folder = save_model(model, tmp_path / "m")
        report = atomic_write_text(tmp_path / "r" / "results.md", "x")
    finally:
        os.umask(mask)
    assert folder.stat().st_mode & 0o777 == 0o755  # mkdtemp's 0700 made it unreadable to other users
    assert report.stat().st_mode & 0o777 == 0o644


def test_names_devices_and_locations_checked_before_any_model_runs(tmp_path):
    from o1_embedder.evaluation.job import EvalSettings, run_eval
    from o1_embedder.generation.backends import check_device
    from o1_embedder.generation.transformers_backend import _dtype
    from o1_embedder.serving.settings import ServeSettings

    with pytest.raises(ValueError, match="model name or folder is needed"):
        load_model("")
    with pytest.raises(ValueError, match="share a report row"):
        run_eval("cranfield", tmp_path / "r", EvalSettings(compare=["all-MiniLM-L6-v2", "all-MiniLM-L6-v2"]))
    with pytest.raises(ValueError, match="empty"):
        run_eval("cranfield", tmp_path / "r", EvalSettings(compare=[" "]))
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        run_eval("cranfield", blocker / "sub", EvalSettings(compare=[]))
    with pytest.raises(ValueError, match="is a file"):
        JsonlWriter.check(blocker / "x.jsonl")
    with pytest.raises(ValueError, match="batch_window_ms"):
        ServeSettings(batch_window_ms=1e13)  # past threading's largest wait it killed the model thread
    with pytest.raises(ValueError, match="dtype"):
        _dtype("nn")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no cuda device"):
            check_device("cuda")
    check_device("cpu")
    assert not (tmp_path / "r").exists()
