"""Exploration: alignment under concurrency, no leaks in few-shot examples, retries, failures, resume, kill safety."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from synth_helpers import FakeBackend, records

from o1_embedder.data.records import RecordFile, Stage
from o1_embedder.synthesis.explore import ExplorationPrompt, FewShotPool, derive_seed, synthesize

ROOT = Path(__file__).resolve().parents[1]


def read(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def test_many_records_through_few_workers_keep_their_own_thoughts(tmp_path):
    """Chunks of 16 requests on 3 threads with random delays: results come back out of order."""
    backend = FakeBackend(workers=3, delay=0.004)
    report = synthesize(records(50), backend, tmp_path / "c.jsonl", num_candidates=3, chunk_size=16)
    assert report.written == 50 and not report.failed and report.candidates == 150
    lines = read(tmp_path / "c.jsonl")
    assert sorted(r["query_id"] for r in lines) == sorted(f"q{i}" for i in range(50))
    assert [r["query_id"] for r in lines] != [f"q{i}" for i in range(50)]  # written as completed, not in order
    for record in lines:
        assert record["candidates"] == [f"thought about {record['query']} #{j}" for j in range(3)]
        assert record["synthesis"]["num_candidates"] == 3 and record["synthesis"]["attempts"] == 1
    assert not (tmp_path / "c.failures.jsonl").exists()
    assert len(RecordFile(tmp_path / "c.jsonl", Stage.CANDIDATES)) == 50


def test_seeds_depend_on_query_id_and_attempt_only(tmp_path):
    backend = FakeBackend()
    synthesize(records(5), backend, tmp_path / "a.jsonl", num_candidates=1, seed=3, chunk_size=2)
    seeds = {query: seed for query, _, seed in backend.calls}
    assert seeds["query number 4 about wing lift"] == derive_seed(3, "q4", 0)
    assert len(set(seeds.values())) == 5


def test_few_shot_examples_never_show_the_records_own_answers():
    data = records(6)
    data[1]["pos"].append(data[2]["pos"][0])          # q1 shares a positive with q2
    data[3]["query"] = data[4]["query"]               # q3 and q4 ask the same thing
    data[5]["pos"] = [data[0]["pos"][0][:30]]         # q5's positive is a prefix of q0's
    pool = FewShotPool.from_records(data, seed=0)
    for record in data:
        chosen = pool.choose(record, k=6)
        positives = set(record["pos"])
        for example in chosen:
            assert example.query_id != record["query_id"] and example.query != record["query"]
            assert example.passage not in positives
            assert not any(p in example.passage or example.passage in p for p in positives)
        assert pool.choose(record, k=6) == chosen  # deterministic per record
    assert {e.query_id for e in pool.choose(data[1], 6)} == {"q0", "q3", "q4", "q5"}
    assert {e.query_id for e in pool.choose(data[3], 6)} == {"q0", "q1", "q2", "q5"}
    assert "q0" not in {e.query_id for e in pool.choose(data[5], 6)}


def test_the_prompt_sent_has_no_leak(tmp_path):
    data = records(8)
    seen = []

    class Recording(FakeBackend):
        def _answer(self, request):
            seen.append(request)
            return super()._answer(request)

    synthesize(data, Recording(), tmp_path / "c.jsonl", num_candidates=1, prompt=ExplorationPrompt(num_examples=3))
    by_query = {r["query"]: r for r in data}
    for request in seen:
        record = by_query[request.messages[-1]["content"].removeprefix("Query: ")]
        shown = "\n".join(m["content"] for m in request.messages[:-1])
        assert record["pos"][0] not in shown and record["query"] not in shown
        assert sum(m["role"] == "assistant" for m in request.messages) == 3


def test_examples_from_a_file(tmp_path):
    path = tmp_path / "examples.jsonl"
    path.write_text(json.dumps({"query": "what is drag", "passage": "drag opposes motion"}) + "\n"
                    + json.dumps({"query": "q", "pos": ["from pos"]}) + "\n")
    pool = FewShotPool.from_file(path)
    assert [(e.query, e.passage) for e in pool.examples] == [("what is drag", "drag opposes motion"), ("q", "from pos")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"query": "no passage"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: field 'passage'"):
        FewShotPool.from_file(bad)


def test_empty_texts_are_retried_and_failures_reported_never_written(tmp_path):
    backend = FakeBackend(empty=["number 2 "], fail=["number 4 "], flaky=["number 6 "])
    out = tmp_path / "c.jsonl"
    report = synthesize(records(8), backend, out, num_candidates=2, max_attempts=3, chunk_size=5)
    assert report.written == 6 and sorted(report.failed) == ["q2", "q4"]
    assert "2 of 2 generated texts were empty" in report.failed["q2"]
    assert "simulated failure" in report.failed["q4"] and "after 3 attempts" in report.failed["q4"]
    lines = {r["query_id"]: r for r in read(out)}
    assert set(lines) == {"q0", "q1", "q3", "q5", "q6", "q7"}
    assert lines["q6"]["synthesis"]["attempts"] == 2  # the flaky one succeeded on its second try
    assert all(c.strip() for r in lines.values() for c in r["candidates"])
    assert sorted(f["query_id"] for f in read(tmp_path / "c.failures.jsonl")) == ["q2", "q4"]
    calls = [q for q, _, _ in backend.calls if "number 2 " in q]
    assert len(calls) == 3  # three rounds for the empty one

    # re-running retries only the failed ones; once they succeed the failure report disappears
    report = synthesize(records(8), FakeBackend(), out, num_candidates=2)
    assert report.written == 2 and report.skipped == 6 and not report.failed
    assert sorted(r["query_id"] for r in read(out)) == [f"q{i}" for i in range(8)]
    assert not (tmp_path / "c.failures.jsonl").exists()


def test_min_candidates_accepts_records_that_got_enough(tmp_path):
    class OneShort(FakeBackend):
        def _answer(self, request):
            generation = super()._answer(request)
            generation.texts[-1] = ""
            return generation

    report = synthesize(records(3), OneShort(), tmp_path / "c.jsonl", num_candidates=3, max_attempts=2,
                        min_candidates=2)
    assert report.written == 3 and not report.failed
    assert all(len(r["candidates"]) == 2 for r in read(tmp_path / "c.jsonl"))  # asked again for 1, got "" again


def test_resume_skips_done_ids_and_repairs_a_partial_line(tmp_path):
    out = tmp_path / "c.jsonl"
    synthesize(records(4), FakeBackend(), out, num_candidates=2)
    lines = out.read_text().splitlines()
    kept = [json.loads(line) for line in lines[:2]]
    out.write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][: len(lines[2]) // 2])  # killed mid-line
    backend = FakeBackend()
    report = synthesize(records(4), backend, out, num_candidates=2)
    assert report.skipped == 2 and report.written == 2
    final = read(out)
    assert final[:2] == kept
    assert sorted(r["query_id"] for r in final) == ["q0", "q1", "q2", "q3"]
    kept_ids = {k["query_id"] for k in kept}
    assert {q for q, _, _ in backend.calls} == {r["query"] for r in records(4) if r["query_id"] not in kept_ids}


def test_resume_with_other_settings_is_refused(tmp_path):
    out = tmp_path / "c.jsonl"
    synthesize(records(2), FakeBackend(), out, num_candidates=2, limit=1)
    with pytest.raises(ValueError, match="num_candidates: 2 -> 3"):
        synthesize(records(2), FakeBackend(), out, num_candidates=3)
    with pytest.raises(ValueError, match="seed"):
        synthesize(records(2), FakeBackend(), out, num_candidates=2, seed=1)
    report = synthesize(records(2), FakeBackend(), out, num_candidates=3, overwrite=True)
    assert report.written == 2 and report.skipped == 0


def test_bad_arguments_and_records(tmp_path):
    with pytest.raises(ValueError, match="min_candidates"):
        synthesize(records(1), FakeBackend(), tmp_path / "a.jsonl", num_candidates=2, min_candidates=3)
    bad = [records(1)[0], {"query_id": "x", "query": "q", "pos": []}]
    with pytest.raises(ValueError, match="record 2: field 'pos' is empty"):
        synthesize(bad, FakeBackend(), tmp_path / "b.jsonl")


SLOW_RUN = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from synth_helpers import FakeBackend, records
    from o1_embedder.synthesis.explore import synthesize

    class Slow(FakeBackend):
        def _answer(self, request):
            time.sleep(0.05)
            return super()._answer(request)

    synthesize(records(400), Slow(workers=2), {out!r}, num_candidates=2, chunk_size=8)
""")


def test_a_killed_run_leaves_only_whole_lines_and_resumes(tmp_path):
    out = tmp_path / "c.jsonl"
    script = SLOW_RUN.format(tests=str(ROOT / "tests"), out=str(out))
    process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 6):
            assert process.poll() is None, process.stderr.read().decode()
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    data = out.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    done = [json.loads(line)["query_id"] for line in complete.decode().splitlines()]
    assert 6 <= len(done) < 400
    report = synthesize(records(400), FakeBackend(), out, num_candidates=2, limit=len(done) + 6)
    assert report.skipped == len(done) and report.written == 6
    final = read(out)  # every line parses
    assert sorted(r["query_id"] for r in final) == sorted(f"q{i}" for i in range(len(done) + 6))
    for record in final:
        assert record["candidates"][0] == f"thought about {record['query']} #0"
