"""The ``o1-embedder`` command."""

from __future__ import annotations

import argparse
import json
import os
import sys


def _cmd_init(args) -> int:
    from o1_embedder.model.loading import materialize_default
    from o1_embedder.model.settings import InitSettings
    from o1_embedder.options import dataclass_from_args

    settings = dataclass_from_args(InitSettings, args)
    path = materialize_default(settings.path, force=settings.force)
    print(f"wrote the embedded default (SmolLM2-135M-Instruct) to {path}\n"
          f"load it with: SentenceTransformer({str(settings.path)!r}, trust_remote_code=True)")
    return 0


def _cmd_convert(args) -> int:
    from o1_embedder.model.loading import convert_checkpoint
    from o1_embedder.model.settings import ConvertSettings
    from o1_embedder.options import dataclass_from_args

    settings = dataclass_from_args(ConvertSettings, args)
    path = convert_checkpoint(settings.source, settings.target, allow_missing_tokens=settings.allow_missing_tokens,
                              dtype=settings.dtype, max_query_tokens=settings.max_query_tokens,
                              max_document_tokens=settings.max_document_tokens, num_thoughts=settings.num_thoughts,
                              generation=_generation(args), force=settings.force)
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
    from o1_embedder.evaluation.job import EvalCommand, run_eval
    from o1_embedder.options import dataclass_from_args

    command = dataclass_from_args(EvalCommand, args)
    run_eval(command.dataset, command.report_folder, command)
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
    from o1_embedder.model.settings import ExportSettings
    from o1_embedder.options import dataclass_from_args
    from o1_embedder.training.export import export_checkpoint

    settings = dataclass_from_args(ExportSettings, args)
    path = export_checkpoint(settings.checkpoint, settings.output, force=settings.force)
    print(f"wrote {path}")
    return 0


def _cmd_mteb(args, rest) -> int:
    from o1_embedder.evaluation.mteb import main as mteb_main

    return mteb_main(rest)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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
    from o1_embedder.options import dataclass_from_args
    from o1_embedder.synthesis.mine import mine_negatives
    from o1_embedder.synthesis.settings import MineSettings

    settings = dataclass_from_args(MineSettings, args)
    check_output(settings.output, [settings.source])
    if os.path.exists(settings.output) and not settings.overwrite:
        raise ValueError(f"{settings.output} exists; pass --overwrite to replace it")

    records, dataset = resolve_source(settings.source, Stage.BASE, split=settings.split, min_grade=settings.min_grade,
                                      max_queries=settings.max_queries, max_docs=settings.max_docs,
                                      seed=settings.seed, log=_log)
    corpus = [document_text(doc) for doc in dataset.corpus.values()] if dataset is not None else []
    if settings.corpus:
        corpus += _corpus_texts(settings.corpus)
    _log(f"mine: {len(corpus)} corpus passages (+ the records' positives); model {settings.model}")
    model = load_comparison_model(settings.model)
    result = mine_negatives(records, model, corpus=corpus, num_negatives=settings.num_negatives,
                            range_min=settings.range_min, range_max=settings.range_max,
                            relative_margin=None if settings.no_margin else settings.relative_margin,
                            sampling_strategy=settings.sampling, batch_size=settings.batch_size,
                            replace=settings.replace, model_name=settings.model)
    write_records_atomic(settings.output, result.records, inputs=[settings.source])
    failures = failures_path(settings.output)
    if result.failed:
        with JsonlWriter(failures, overwrite=True) as writer:
            for query_id, reason in result.failed.items():
                writer.write({"query_id": query_id, "error": reason})
    elif failures.exists():
        failures.unlink()
    print(f"mine: {result.summary(settings.num_negatives)}; wrote {settings.output}"
          + (f" (left out: {failures})" if result.failed else ""))
    return 0


def _generation(args):
    from o1_embedder.generation.settings import GenerationSettings
    from o1_embedder.options import dataclass_from_args

    return dataclass_from_args(GenerationSettings, args)


def _backend(settings, generation):
    from o1_embedder.generation.backends import make_backend

    model = settings.model
    if settings.backend == "transformers":
        if model is None:
            from o1_embedder.model.default import default_backbone_path

            model = str(default_backbone_path())
        options = {"batch_size": settings.batch_size, "device": settings.device, "dtype": settings.dtype,
                   "use_chat_template": False if settings.no_chat_template else None}
    elif settings.backend == "openai":
        options = {"base_url": settings.base_url, "api_key": settings.api_key, "endpoint": settings.endpoint,
                   "concurrency": settings.concurrency, "timeout": settings.timeout,
                   "max_retries": settings.max_retries}
    else:
        options = {"use_chat": not settings.no_chat_template}
        if settings.dtype:
            options["dtype"] = settings.dtype
    return make_backend(settings.backend, model=model, settings=generation, **options)


def _cmd_synth(args) -> int:
    from pathlib import Path

    from o1_embedder.data.records import JsonlWriter, Stage, resolve_source
    from o1_embedder.options import dataclass_from_args
    from o1_embedder.synthesis.explore import DEFAULT_INSTRUCTION, ExplorationPrompt, FewShotPool, synthesize
    from o1_embedder.synthesis.settings import SynthSettings

    settings = dataclass_from_args(SynthSettings, args)
    generation = _generation(args)
    instruction = DEFAULT_INSTRUCTION
    if settings.instruction_file:
        instruction = Path(settings.instruction_file).read_text(encoding="utf-8").strip()
    elif settings.instruction is not None:
        instruction = settings.instruction
    prompt = ExplorationPrompt(instruction=instruction, query_template=settings.query_template,
                               num_examples=settings.few_shot, max_example_chars=settings.max_example_chars,
                               system_role=not settings.no_system_role)
    records, dataset = resolve_source(settings.source, Stage.BASE, split=settings.split, min_grade=settings.min_grade,
                                      max_queries=settings.max_queries, max_docs=settings.max_docs,
                                      seed=settings.subset_seed, log=_log)
    if dataset is not None:
        _log("synth: records from a BEIR folder have no negatives yet; run 'o1-embedder mine' on the output "
             "before 'vote'")
    examples = FewShotPool.from_file(settings.examples, seed=generation.seed) if settings.examples else None
    JsonlWriter.check(settings.output, overwrite=settings.overwrite, inputs=[settings.source, settings.examples])
    try:
        backend = _backend(settings, generation)
    except ConnectionError as err:
        print(f"o1-embedder synth: error: {err}", file=sys.stderr)
        return 2
    _log(f"synth: {json.dumps(backend.describe())}")
    with backend:
        report = synthesize(records, backend, settings.output, num_candidates=settings.num_candidates, prompt=prompt,
                            examples=examples, seed=generation.seed if generation.seed is not None else 42,
                            max_attempts=settings.max_attempts, min_candidates=settings.min_candidates,
                            chunk_size=settings.records_per_chunk, overwrite=settings.overwrite,
                            limit=settings.limit, log=_log)
    print(f"synth: {report.summary()}")
    return 1 if report.failed else 0


def _cmd_vote(args) -> int:
    from o1_embedder.data.records import JsonlWriter, RecordFile, Stage
    from o1_embedder.options import dataclass_from_args
    from o1_embedder.synthesis.settings import VoteSettings
    from o1_embedder.synthesis.vote import load_committee, vote

    settings = dataclass_from_args(VoteSettings, args)
    records = RecordFile(settings.source, Stage.CANDIDATES)
    JsonlWriter.check(settings.output, overwrite=settings.overwrite, inputs=[settings.source])
    _log(f"vote: {len(records)} records; committee {', '.join(settings.committee)}; {settings.method} vote")
    members = load_committee(settings.committee, batch_size=settings.batch_size)
    report = vote(records, members, settings.output, method=settings.method, chunk_size=settings.chunk_size,
                  overwrite=settings.overwrite, log=_log)
    print(f"vote: {report.summary()}")
    return 0


def _add_synthesis_commands(sub) -> None:
    from o1_embedder.generation.settings import GenerationSettings
    from o1_embedder.options import add_dataclass_options
    from o1_embedder.synthesis.settings import MineSettings, SynthSettings, VoteSettings

    p = sub.add_parser("mine", help="add hard negatives (sentence-transformers mine_hard_negatives) to records "
                                    "from a BEIR folder or JSON lines")
    add_dataclass_options(p, MineSettings)
    p.set_defaults(func=_cmd_mine)

    p = sub.add_parser("synth", help="exploration: N candidate thoughts per record (resumable JSON lines)")
    add_dataclass_options(p, SynthSettings)
    add_dataclass_options(p.add_argument_group("thought generation"), GenerationSettings,
                          overrides={"max_new_tokens": {"default": 256}, "temperature": {"default": 0.7}})
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("vote", help="refinement: a committee of retrievers picks each record's thought")
    add_dataclass_options(p, VoteSettings)
    p.set_defaults(func=_cmd_vote)


def build_parser() -> argparse.ArgumentParser:
    from o1_embedder import __version__
    from o1_embedder.evaluation.job import EvalCommand
    from o1_embedder.generation.settings import GenerationSettings
    from o1_embedder.model.settings import ConvertSettings, ExportSettings, InitSettings
    from o1_embedder.options import HelpFormatter, add_dataclass_options

    parser = argparse.ArgumentParser(prog="o1-embedder", description="Think-then-embed retrieval (O1 Embedder).")
    parser.add_argument("--version", action="version", version=f"o1-embedder {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", help="write the embedded default model (SmolLM2-135M-Instruct) as a model folder")
    add_dataclass_options(p, InitSettings)
    p.set_defaults(func=_cmd_init)

    p = sub.add_parser("convert", help="turn a released O1 Embedder checkpoint (merged causal LM) into a model folder")
    add_dataclass_options(p, ConvertSettings)
    add_dataclass_options(p.add_argument_group("thought generation"), GenerationSettings)
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("think", help="print the thoughts a model writes for queries (JSON lines)")
    from o1_embedder.model.overrides import ThinkSettings

    add_dataclass_options(p, ThinkSettings)
    p.set_defaults(func=_cmd_think)

    p = sub.add_parser("eval", help="evaluate on a BEIR folder: think vs no think vs BM25 vs other models",
                       formatter_class=HelpFormatter)
    add_dataclass_options(p, EvalCommand)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("train", help="joint training (thoughts + contrastive) on reference-format jsonl; "
                                     "runs under torchrun for several processes",
                       formatter_class=HelpFormatter)
    from o1_embedder.training.train import TrainConfig

    add_dataclass_options(p, TrainConfig)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("export", help="a training checkpoint (OUT.checkpoints/checkpoint-N) as a model folder")
    add_dataclass_options(p, ExportSettings)
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
