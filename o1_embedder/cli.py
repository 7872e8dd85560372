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

    path = materialize_default(args.path)
    print(f"wrote the embedded default (SmolLM2-135M-Instruct) to {path}\n"
          f"load it with: SentenceTransformer({str(args.path)!r}, trust_remote_code=True)")
    return 0


def _cmd_convert(args) -> int:
    from o1_embedder.model.loading import convert_checkpoint

    path = convert_checkpoint(args.source, args.target, allow_missing_tokens=args.allow_missing_tokens)
    print(f"wrote {path}")
    return 0


def _cmd_think(args) -> int:
    from o1_embedder.model.loading import load_model

    model = load_model(args.model)
    module = model[0]
    changes = {k: v for k, v in (("num_thoughts", args.num_thoughts), ("max_new_tokens", args.max_new_tokens))
               if v is not None}
    if args.greedy:
        changes["do_sample"] = False
    module.configure(**changes)
    _, thoughts = module.think_and_embed(args.queries)
    for query, row in zip(args.queries, thoughts):
        print(json.dumps({"query": query, "thoughts": row}, ensure_ascii=False))
    return 0


def _cmd_eval(args) -> int:
    from o1_embedder.evaluation.job import EvalSettings, run_eval

    settings = EvalSettings(
        model=args.model, compare=args.compare, bm25=not args.no_bm25, max_queries=args.max_queries,
        max_docs=args.max_docs, split=args.split, seed=args.seed, batch_size=args.batch_size,
        num_thoughts=args.num_thoughts, max_new_tokens=args.max_new_tokens, greedy=True if args.greedy else None,
        max_document_tokens=args.max_document_tokens, cache_dir=args.cache_dir,
    )
    output = args.output or os.path.join("runs", f"eval-{os.path.basename(os.path.normpath(args.dataset))}")
    run_eval(args.dataset, output, settings)
    return 0


def _cmd_train(args) -> int:
    from o1_embedder.training.train import TrainConfig, train

    config = TrainConfig(
        data=args.data, output=args.output, model=args.model, backbone=args.backbone, lora=not args.no_lora,
        lora_r=args.lora_r, lora_alpha=args.lora_alpha, epochs=args.epochs, max_steps=args.max_steps,
        learning_rate=args.learning_rate, batch_size=args.batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps, num_negatives=args.num_negatives,
        temperature=args.temperature, contrastive_weight=args.contrastive_weight,
        generation_weight=args.generation_weight, distillation_weight=args.distillation_weight,
        cached_mini_batch_size=args.cached_mini_batch_size, thought_dropout=args.thought_dropout, bf16=args.bf16, gradient_checkpointing=args.gradient_checkpointing,
        seed=args.seed, logging_steps=args.logging_steps,
    )
    result = train(config)
    print(f"saved {result.path}")
    return 0


def _cmd_mteb(args, rest) -> int:
    from o1_embedder.evaluation.mteb_integration import main as mteb_main

    return mteb_main(rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="o1-embedder", description="Think-then-embed retrieval (O1 Embedder).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", help="write the embedded default model (SmolLM2-135M-Instruct) as a model folder")
    p.add_argument("path", nargs="?", default="o1-embedder", help="target folder (default: ./o1-embedder)")
    p.set_defaults(func=_cmd_init)

    p = sub.add_parser("convert", help="turn a released O1 Embedder checkpoint (merged causal LM) into a model folder")
    p.add_argument("source", help="checkpoint folder or hub id")
    p.add_argument("target", help="output model folder")
    p.add_argument("--allow-missing-tokens", action="store_true",
                   help="add missing special tokens (untrained) instead of refusing")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("think", help="print the thoughts a model writes for queries (JSON lines)")
    p.add_argument("queries", nargs="+")
    _model_options(p)
    p.set_defaults(func=_cmd_think)

    p = sub.add_parser("eval", help="evaluate on a BEIR folder: think vs no think vs BM25 vs other models")
    p.add_argument("dataset", help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/), or 'cranfield' (shipped)")
    _model_options(p)
    p.add_argument("--compare", nargs="*", default=["all-MiniLM-L6-v2"],
                   help="Sentence-Transformers models to compare with (default: all-MiniLM-L6-v2)")
    p.add_argument("--no-bm25", action="store_true", help="leave BM25 out")
    p.add_argument("--max-queries", type=_positive, help="sample this many judged queries")
    p.add_argument("--max-docs", type=_positive, help="keep the judged documents plus a sample up to this many")
    p.add_argument("--split", default="test", help="qrels split (default: test)")
    p.add_argument("--seed", type=int, default=0, help="subset sampling seed")
    p.add_argument("--batch-size", type=_positive, default=16)
    p.add_argument("--max-document-tokens", type=_positive, help="truncate documents to this many tokens")
    p.add_argument("--cache-dir", help="corpus-embedding cache (default: ~/.cache/o1_embedder/embeddings)")
    p.add_argument("--output", help="report folder (default: runs/eval-DATASET)")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("train", help="joint training (thoughts + contrastive) on reference-format jsonl; "
                                     "runs under torchrun for several processes")
    p.add_argument("data", help="jsonl: query, pos, neg, thought (+ pos_scores, neg_scores)")
    p.add_argument("--output", required=True, help="folder for the trained (merged) model")
    p.add_argument("--model", default="o1-embedder", help="o1-embedder model to start from (default: embedded)")
    p.add_argument("--backbone", help="start from a plain causal LM instead (hub id or folder)")
    p.add_argument("--no-lora", action="store_true", help="full fine-tuning instead of LoRA")
    p.add_argument("--lora-r", type=_positive, default=32)
    p.add_argument("--lora-alpha", type=_positive, default=64)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, default=-1)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--batch-size", type=_positive, default=8, help="per process")
    p.add_argument("--gradient-accumulation-steps", type=_positive, default=1)
    p.add_argument("--num-negatives", type=int, default=7, help="hard negatives per query")
    p.add_argument("--temperature", type=float, default=0.02)
    p.add_argument("--contrastive-weight", type=float, default=0.8)
    p.add_argument("--generation-weight", type=float, default=0.2)
    p.add_argument("--distillation-weight", type=float, default=0.0)
    p.add_argument("--cached-mini-batch-size", type=_positive,
                   help="GradCache-style loss: encode in mini-batches of this size (large batches, small memory)")
    p.add_argument("--thought-dropout", type=float, default=0.1)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--logging-steps", type=_positive, default=10)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("mteb", help="run mteb's CLI with an o1-embedder model registered, e.g. "
                                    "'o1-embedder mteb run -m PATH -t SciFact'", add_help=False)
    p.set_defaults(func=None)
    return parser


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="o1-embedder",
                   help="o1-embedder model folder or hub id (default: the embedded default)")
    p.add_argument("--num-thoughts", type=_positive, help="thoughts per query K")
    p.add_argument("--max-new-tokens", type=_positive, help="thought length limit")
    p.add_argument("--greedy", action="store_true", help="greedy decoding (one thought)")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "mteb":
        return _cmd_mteb(None, argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, ModuleNotFoundError) as err:
        print(f"o1-embedder {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
