"""The ``o1-embedder`` command."""

from __future__ import annotations

import argparse
import json
import os
import sys


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return number


def _cmd_init(args) -> int:
    from o1_embedder.model.loading import materialize_default

    path = materialize_default(args.path, force=args.force)
    print(f"wrote the embedded default (SmolLM2-135M-Instruct) to {path}\n"
          f"load it with: SentenceTransformer({str(args.path)!r}, trust_remote_code=True)")
    return 0


def _cmd_convert(args) -> int:
    from o1_embedder.model.loading import convert_checkpoint

    generation = _generation(args)
    path = convert_checkpoint(args.source, args.target, allow_missing_tokens=args.allow_missing_tokens,
                              dtype=args.dtype, max_query_tokens=args.max_query_tokens,
                              max_document_tokens=args.max_document_tokens, num_thoughts=args.num_thoughts,
                              generation=generation, force=args.force)
    print(f"wrote {path}")
    return 0


def _cmd_think(args) -> int:
    from o1_embedder.model.loading import load_model
    from o1_embedder.model.overrides import ThinkSettings
    from o1_embedder.options import dataclass_from_args

    settings = dataclass_from_args(ThinkSettings, args)
    model = load_model(settings.model)
    module = model[0]
    settings.apply(module)
    _, thoughts = module.think_and_embed(settings.queries)
    for query, row in zip(settings.queries, thoughts):
        print(json.dumps({"query": query, "thoughts": row}, ensure_ascii=False))
    return 0


def _cmd_eval(args) -> int:
    from o1_embedder.evaluation.job import EvalSettings, run_eval
    from o1_embedder.options import dataclass_from_args

    settings = dataclass_from_args(EvalSettings, args)
    output = args.output or os.path.join("runs", f"eval-{os.path.basename(os.path.normpath(args.dataset))}")
    run_eval(args.dataset, output, settings)
    return 0


def _cmd_train(args) -> int:
    from o1_embedder.options import dataclass_from_args
    from o1_embedder.training.train import TrainConfig, train

    result = train(dataclass_from_args(TrainConfig, args))
    print(f"saved {result.path}")
    return 0


def _cmd_adapt(args) -> int:
    from o1_embedder.options import dataclass_from_args
    from o1_embedder.pipeline.adapt import AdaptConfig, adapt

    path = adapt(dataclass_from_args(AdaptConfig, args))
    if (path / "modules.json").is_file():
        print(f"adapted model: {path}\nload it with: load_model({str(path)!r}) or "
              f"SentenceTransformer({str(path)!r}, trust_remote_code=True)")
    return 0


def _cmd_export(args) -> int:
    from o1_embedder.training.export import export_checkpoint

    path = export_checkpoint(args.checkpoint, args.output, force=args.force)
    print(f"wrote {path}")
    return 0


def _cmd_mteb(args, rest) -> int:
    from o1_embedder.evaluation.mteb import main as mteb_main

    return mteb_main(rest)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _margin(value: str) -> float:
    number = float(value)
    if not 0 <= number < 1:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return number


def _corpus_texts(path: str) -> list[str]:
    """Passages of a BEIR folder (or 'cranfield'), or of a corpus.jsonl file (``_id``, ``text``, optional ``title``)."""
    from o1_embedder.data.beir import _read_jsonl, document_text, resolve_beir_path

    source = resolve_beir_path(path)
    if source.is_dir():
        source = source / "corpus.jsonl"
    if not source.is_file():
        raise FileNotFoundError(f"corpus not found: {path}")
    return [document_text(record) for _, record in _read_jsonl(source, optional_fields=("title",))]


def _cmd_mine(args) -> int:
    from o1_embedder.data.beir import document_text
    from o1_embedder.data.records import (
        JsonlWriter,
        Stage,
        check_output,
        failures_path,
        resolve_source,
        write_records_atomic,
    )
    from o1_embedder.model.loading import load_comparison_model
    from o1_embedder.synthesis.mine import mine_negatives

    check_output(args.output, [args.source])
    if os.path.exists(args.output) and not args.overwrite:
        raise ValueError(f"{args.output} exists; pass --overwrite to replace it")

    records, dataset = resolve_source(args.source, Stage.BASE, split=args.split, min_grade=args.min_grade,
                                      max_queries=args.max_queries, max_docs=args.max_docs, seed=args.seed, log=_log)
    corpus = [document_text(doc) for doc in dataset.corpus.values()] if dataset is not None else []
    if args.corpus:
        corpus += _corpus_texts(args.corpus)
    _log(f"mine: {len(corpus)} corpus passages (+ the records' positives); model {args.model}")
    model = load_comparison_model(args.model)
    result = mine_negatives(records, model, corpus=corpus, num_negatives=args.num_negatives,
                            range_min=args.range_min, range_max=args.range_max,
                            relative_margin=None if args.no_margin else args.relative_margin,
                            sampling_strategy=args.sampling, batch_size=args.batch_size, replace=args.replace,
                            model_name=args.model)
    write_records_atomic(args.output, result.records, inputs=[args.source])
    failures = failures_path(args.output)
    if result.failed:
        with JsonlWriter(failures, overwrite=True) as writer:
            for query_id, reason in result.failed.items():
                writer.write({"query_id": query_id, "error": reason})
    elif failures.exists():
        failures.unlink()
    print(f"mine: {result.summary(args.num_negatives)}; wrote {args.output}"
          + (f" (left out: {failures})" if result.failed else ""))
    return 0


def _generation(args):
    from o1_embedder.generation.settings import GenerationSettings
    from o1_embedder.options import dataclass_from_args

    return dataclass_from_args(GenerationSettings, args)


def _backend(args):
    from o1_embedder.generation.backends import make_backend

    settings = _generation(args)
    model = args.model
    if args.backend == "transformers":
        if model is None:
            from o1_embedder.model.default import default_backbone_path

            model = str(default_backbone_path())
        options = {"batch_size": args.batch_size, "device": args.device, "dtype": args.dtype,
                   "use_chat_template": False if args.no_chat_template else None}
    elif args.backend == "openai":
        if not args.base_url:
            raise ValueError("--backend openai needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        options = {"base_url": args.base_url, "api_key": args.api_key, "endpoint": args.endpoint,
                   "concurrency": args.concurrency, "timeout": args.timeout, "max_retries": args.max_retries}
    else:
        options = {"use_chat": not args.no_chat_template}
        if args.dtype:
            options["dtype"] = args.dtype
    return make_backend(args.backend, model=model, settings=settings, **options)


def _cmd_synth(args) -> int:
    from pathlib import Path

    from o1_embedder.data.records import JsonlWriter, Stage, resolve_source
    from o1_embedder.synthesis.explore import DEFAULT_INSTRUCTION, ExplorationPrompt, FewShotPool, synthesize

    instruction = DEFAULT_INSTRUCTION
    if args.instruction_file:
        instruction = Path(args.instruction_file).read_text(encoding="utf-8").strip()
    elif args.instruction is not None:
        instruction = args.instruction
    prompt = ExplorationPrompt(instruction=instruction, query_template=args.query_template,
                               num_examples=args.few_shot, max_example_chars=args.max_example_chars,
                               system_role=not args.no_system_role)
    records, dataset = resolve_source(args.source, Stage.BASE, split=args.split, min_grade=args.min_grade,
                                      max_queries=args.max_queries, max_docs=args.max_docs, seed=args.subset_seed,
                                      log=_log)
    if dataset is not None:
        _log("synth: records from a BEIR folder have no negatives yet; run 'o1-embedder mine' on the output "
             "before 'vote'")
    examples = FewShotPool.from_file(args.examples, seed=args.seed) if args.examples else None
    JsonlWriter.check(args.output, overwrite=args.overwrite, inputs=[args.source, args.examples])
    try:
        backend = _backend(args)
    except ConnectionError as err:
        print(f"o1-embedder synth: error: {err}", file=sys.stderr)
        return 2
    _log(f"synth: {json.dumps(backend.describe())}")
    chunk_size = args.chunk_size or 4 * (args.concurrency if args.backend == "openai" else args.batch_size)
    with backend:
        report = synthesize(records, backend, args.output, num_candidates=args.num_candidates, prompt=prompt,
                            examples=examples, seed=args.seed if args.seed is not None else 42,
                            max_attempts=args.max_attempts,
                            min_candidates=args.min_candidates, chunk_size=chunk_size, overwrite=args.overwrite,
                            limit=args.limit, log=_log)
    print(f"synth: {report.summary()}")
    return 1 if report.failed else 0


def _cmd_vote(args) -> int:
    from o1_embedder.data.records import JsonlWriter, RecordFile, Stage
    from o1_embedder.synthesis.vote import load_committee, vote

    records = RecordFile(args.source, Stage.CANDIDATES)
    JsonlWriter.check(args.output, overwrite=args.overwrite, inputs=[args.source])
    _log(f"vote: {len(records)} records; committee {', '.join(args.committee)}; {args.method} vote")
    members = load_committee(args.committee, batch_size=args.batch_size)
    report = vote(records, members, args.output, method=args.method, chunk_size=args.chunk_size,
                  overwrite=args.overwrite, log=_log)
    print(f"vote: {report.summary()}")
    return 0


def _source_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="records (JSON lines with query, pos[, neg, query_id]) or a BEIR folder "
                                  "('cranfield' names the shipped copy)")
    p.add_argument("-o", "--output", required=True, help="output JSON lines file")
    p.add_argument("--split", help="BEIR qrels split (default: train when present, else test)")
    p.add_argument("--min-grade", type=int, default=1, help="BEIR: lowest relevance grade counted as positive")
    p.add_argument("--max-queries", type=_positive, help="BEIR: sample this many judged queries")
    p.add_argument("--max-docs", type=_positive, help="BEIR: keep the judged documents plus a sample up to this many")


def _add_synthesis_commands(sub) -> None:
    from o1_embedder.options import add_dataclass_options
    from o1_embedder.synthesis.vote import DEFAULT_COMMITTEE

    p = sub.add_parser("mine", help="add hard negatives (sentence-transformers mine_hard_negatives) to records "
                                    "from a BEIR folder or JSON lines")
    _source_options(p)
    p.add_argument("--seed", type=int, default=0, help="BEIR subset sampling seed")
    p.add_argument("--model", default="all-MiniLM-L6-v2", help="Sentence-Transformers model that mines "
                                                               "(default: all-MiniLM-L6-v2, offline)")
    p.add_argument("--num-negatives", type=_positive, default=15, help="negatives per record (default 15)")
    p.add_argument("--range-min", type=int, default=0, help="skip this many top-ranked candidates")
    p.add_argument("--range-max", type=_positive, help="consider candidates up to this rank")
    p.add_argument("--relative-margin", type=_margin, default=0.05,
                   help="drop candidates scoring above (1 - margin) x the weakest positive's score (default 0.05)")
    p.add_argument("--no-margin", action="store_true", help="no margin: the top non-positive candidates")
    p.add_argument("--sampling", choices=("top", "random"), default="top")
    p.add_argument("--corpus", help="more candidate passages: a BEIR folder or corpus.jsonl")
    p.add_argument("--batch-size", type=_positive, default=64)
    p.add_argument("--replace", action="store_true", help="mine again for records that already have negatives")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=_cmd_mine)

    p = sub.add_parser("synth", help="exploration: N candidate thoughts per record (resumable JSON lines)")
    _source_options(p)
    p.add_argument("--subset-seed", type=int, default=0, help="BEIR subset sampling seed")
    g = p.add_argument_group("generator")
    g.add_argument("--backend", choices=("transformers", "openai", "vllm"), default="transformers")
    g.add_argument("--model", help="transformers/vllm: causal LM folder or hub id (default: the embedded "
                                   "SmolLM2-135M-Instruct); openai: served model (default: the server's first)")
    g.add_argument("-n", "--num-candidates", type=_positive, default=3, help="candidate thoughts per record")
    from o1_embedder.generation.settings import GenerationSettings

    add_dataclass_options(g, GenerationSettings, overrides={"max_new_tokens": {"default": 256},
                                                            "temperature": {"default": 0.7}})
    g.add_argument("--batch-size", type=_positive, default=8, help="transformers: rows generated together")
    g.add_argument("--device", help="transformers: torch device (default cpu)")
    g.add_argument("--dtype", help="transformers/vllm: e.g. bfloat16")
    g.add_argument("--no-chat-template", action="store_true", help="send the plain-text prompt instead of chat")
    g = p.add_argument_group("OpenAI-compatible server")
    g.add_argument("--base-url", help="e.g. http://127.0.0.1:8000/v1 (vllm serve, SGLang, llama.cpp server)")
    g.add_argument("--api-key", help="default: $OPENAI_API_KEY")
    g.add_argument("--endpoint", choices=("chat", "completion"), default="chat")
    g.add_argument("--concurrency", type=_positive, default=16, help="requests in flight")
    g.add_argument("--timeout", type=float, default=120.0, help="seconds per HTTP request")
    g.add_argument("--max-retries", type=int, default=5, help="retries per HTTP request (exponential backoff)")
    g = p.add_argument_group("prompt")
    g.add_argument("--instruction", help="the instruction (default: think about a plausible response ...)")
    g.add_argument("--instruction-file", help="read the instruction from a file")
    g.add_argument("--query-template", default="Query: {query}")
    g.add_argument("--few-shot", type=int, default=2, help="examples per prompt (query -> relevant passage)")
    g.add_argument("--examples", help="JSON lines of {query, passage} to draw examples from "
                                      "(default: the first 64 records)")
    g.add_argument("--max-example-chars", type=int, default=600)
    g.add_argument("--no-system-role", action="store_true", help="put the instruction in the first user turn")
    g = p.add_argument_group("run")
    g.add_argument("--max-attempts", type=_positive, default=3, help="rounds per record before it is reported failed")
    g.add_argument("--min-candidates", type=_positive, help="accept a record with at least this many candidates "
                                                            "after the last round (default: all N)")
    g.add_argument("--chunk-size", type=_positive, help="records handed to the backend together")
    g.add_argument("--limit", type=_positive, help="only the first N records")
    g.add_argument("--overwrite", action="store_true", help="start the output over instead of resuming")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("vote", help="refinement: a committee of retrievers picks each record's thought")
    p.add_argument("source", help="records with neg and candidates (the output of 'synth' on mined records)")
    p.add_argument("-o", "--output", required=True, help="training file (JSON lines, resumable)")
    p.add_argument("--committee", nargs="+", default=list(DEFAULT_COMMITTEE),
                   help="'bm25' and/or Sentence-Transformers models (default: all-MiniLM-L6-v2 bm25)")
    p.add_argument("--method", choices=("hard", "soft"), default="hard",
                   help="hard: majority of first choices; soft: mean rank-based quality")
    p.add_argument("--batch-size", type=_positive, default=32, help="encoding batch size of dense members")
    p.add_argument("--chunk-size", type=_positive, default=128, help="records scored together")
    p.add_argument("--overwrite", action="store_true", help="start the output over instead of resuming")
    p.set_defaults(func=_cmd_vote)


def build_parser() -> argparse.ArgumentParser:
    from o1_embedder import __version__
    from o1_embedder.evaluation.job import EvalSettings
    from o1_embedder.generation.settings import GenerationSettings
    from o1_embedder.options import HelpFormatter, add_dataclass_options

    parser = argparse.ArgumentParser(prog="o1-embedder", description="Think-then-embed retrieval (O1 Embedder).")
    parser.add_argument("--version", action="version", version=f"o1-embedder {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", help="write the embedded default model (SmolLM2-135M-Instruct) as a model folder")
    p.add_argument("path", nargs="?", default="o1-embedder", help="target folder (default: ./o1-embedder)")
    p.add_argument("--force", action="store_true", help="replace a folder that is not an o1-embedder model folder")
    p.set_defaults(func=_cmd_init)

    p = sub.add_parser("convert", help="turn a released O1 Embedder checkpoint (merged causal LM) into a model folder")
    p.add_argument("source", help="checkpoint folder or hub id")
    p.add_argument("target", help="output model folder")
    p.add_argument("--allow-missing-tokens", action="store_true",
                   help="add missing special tokens (untrained) instead of refusing")
    p.add_argument("--force", action="store_true", help="replace a folder that is not an o1-embedder model folder")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32",
                   help="precision of the saved weights, used again at load (the reference runs float16 on GPUs)")
    p.add_argument("--max-query-tokens", type=_positive,
                   help="query truncation (default: as the reference, a prompt of up to 256 tokens)")
    p.add_argument("--max-document-tokens", type=_positive, default=512, help="document truncation")
    p.add_argument("--num-thoughts", type=_positive, default=3, help="thoughts per query K (embeddings averaged)")
    add_dataclass_options(p, GenerationSettings)
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("think", help="print the thoughts a model writes for queries (JSON lines)")
    from o1_embedder.model.overrides import ThinkSettings

    add_dataclass_options(p, ThinkSettings)
    p.set_defaults(func=_cmd_think)

    p = sub.add_parser("eval", help="evaluate on a BEIR folder: think vs no think vs BM25 vs other models",
                       formatter_class=HelpFormatter)
    p.add_argument("dataset", help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/), or 'cranfield' (shipped)")
    p.add_argument("--output", help="report folder (default: runs/eval-DATASET)")
    add_dataclass_options(p, EvalSettings)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("train", help="joint training (thoughts + contrastive) on reference-format jsonl; "
                                     "runs under torchrun for several processes",
                       formatter_class=HelpFormatter)
    from o1_embedder.training.train import TrainConfig

    add_dataclass_options(p, TrainConfig)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("export", help="a training checkpoint (OUT.checkpoints/checkpoint-N) as a model folder")
    p.add_argument("checkpoint", help="checkpoint folder written by 'o1-embedder train --save-steps N'")
    p.add_argument("output", help="model folder to write")
    p.add_argument("--force", action="store_true", help="replace a folder that is not an o1-embedder model folder")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("adapt", help="zero-label domain adaptation: a model tuned to a corpus, from its documents "
                                     "alone (staged, resumable)", formatter_class=HelpFormatter)
    from o1_embedder.pipeline.adapt import AdaptConfig

    add_dataclass_options(p, AdaptConfig)
    p.set_defaults(func=_cmd_adapt)

    _add_synthesis_commands(sub)
    from o1_embedder.serving.cli import add_serve_command
    add_serve_command(sub)

    for command in sub.choices.values():  # every command's --help shows the defaults
        command.formatter_class = HelpFormatter

    p = sub.add_parser("mteb", help="run mteb's CLI with an o1-embedder model registered, e.g. "
                                    "'o1-embedder mteb run -m PATH -t SciFact'", add_help=False)
    p.set_defaults(func=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "mteb":
        return _cmd_mteb(None, argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"o1-embedder {args.command}: interrupted; no output is left half-written (synth and vote resume "
              f"when run again, train with --resume)", file=sys.stderr)
        return 130
    except (OSError, ValueError, TypeError, ModuleNotFoundError, RuntimeError) as err:
        if os.environ.get("O1_EMBEDDER_DEBUG"):
            raise
        print(f"o1-embedder {args.command}: error: {err} (set O1_EMBEDDER_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
