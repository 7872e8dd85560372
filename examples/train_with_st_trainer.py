"""Train an o1-embedder model the Sentence-Transformers way: a ``datasets.Dataset`` with standard columns,
``SentenceTransformerTrainer`` (o1-embedder's ``JointTrainer`` subclass), and an
``InformationRetrievalEvaluator`` on held-out queries.

    python examples/train_with_st_trainer.py --loss joint --output runs/st-joint      # thoughts + contrastive
    python examples/train_with_st_trainer.py --loss mnrl --output runs/st-mnrl        # a plain ST loss

Columns, by position as Sentence-Transformers reads them: ``anchor`` (the query), ``positive``, ``negative``,
and ``thought`` (by name; used by ``--loss joint``). With ``--loss mnrl`` the anchors are embedded in the
query format without thinking and the passages in the document format, exactly as at inference.

The data here is a seeded split of the shipped Cranfield collection (a demonstration of the API on data that
installs with the package; the thought of a training query is the first sentence of its relevant document).
"""

from __future__ import annotations

import argparse
import os
import random
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from datasets import Dataset  # noqa: E402
from sentence_transformers import SentenceTransformerTrainingArguments  # noqa: E402
from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator  # noqa: E402
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss  # noqa: E402

from o1_embedder import build_model, default_model, save_model  # noqa: E402
from o1_embedder.data import document_text, load_cranfield  # noqa: E402
from o1_embedder.training import JointCollator, JointLoss, JointTrainer, add_lora, merge_lora  # noqa: E402


def split(seed: int, train_queries: int):
    data = load_cranfield()
    judged = data.judged_queries()
    random.Random(seed).shuffle(judged)
    return data, judged[:train_queries], judged[train_queries:]


def training_rows(data, query_ids, seed: int) -> Dataset:
    rng = random.Random(seed)
    doc_ids = sorted(data.corpus)
    rows = {"anchor": [], "positive": [], "negative": [], "thought": []}
    for qid in query_ids:
        relevant = [d for d, grade in data.qrels[qid].items() if grade > 0]
        positive = document_text(data.corpus[relevant[0]])
        negative = rng.choice([d for d in doc_ids if d not in data.qrels[qid]])
        rows["anchor"].append(data.queries[qid])
        rows["positive"].append(positive)
        rows["negative"].append(document_text(data.corpus[negative]))
        rows["thought"].append(positive.split(". ")[0])
    return Dataset.from_dict(rows)


def heldout(data, query_ids) -> InformationRetrievalEvaluator:
    queries = {q: data.queries[q] for q in query_ids}
    relevant = {q: {d for d, grade in data.qrels[q].items() if grade > 0} for q in query_ids}
    corpus = {d: document_text(data.corpus[d]) for d in sorted({d for docs in relevant.values() for d in docs})}
    return InformationRetrievalEvaluator(queries, corpus, relevant, name="cranfield-heldout", batch_size=8)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", help="a causal LM folder or hub id (default: the embedded default)")
    parser.add_argument("--loss", choices=("joint", "mnrl"), default="joint")
    parser.add_argument("--output", default="runs/st-trainer")
    parser.add_argument("--train-queries", type=int, default=150)
    parser.add_argument("--max-steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    settings = dict(num_thoughts=1, generation={"do_sample": False, "max_new_tokens": 32}, max_document_tokens=128)
    model = build_model(args.backbone, **settings) if args.backbone else default_model(trained=False, **settings)
    data, train_ids, test_ids = split(args.seed, args.train_queries)
    evaluator = heldout(data, test_ids)
    dataset = training_rows(data, train_ids, args.seed)
    add_lora(model, r=8, alpha=16)
    if args.loss == "joint":
        loss, collator = JointLoss(model), JointCollator(model[0], thought_dropout=0.1, seed=args.seed)
    else:
        loss, collator = MultipleNegativesRankingLoss(model), None
        dataset = dataset.remove_columns("thought")
    training_args = SentenceTransformerTrainingArguments(
        output_dir=args.output + ".checkpoints", max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
        learning_rate=2e-4, eval_strategy="steps", eval_steps=max(1, args.max_steps // 2), logging_steps=1,
        save_strategy="no", report_to=[], seed=args.seed, use_cpu=True,
    )
    trainer = JointTrainer(model=model, args=training_args, train_dataset=dataset, loss=loss, data_collator=collator,
                           evaluator=evaluator)
    before = evaluator(model)
    trainer.train()
    after = evaluator(model)
    key = "cranfield-heldout_cosine_ndcg@10"
    print(f"held-out nDCG@10 (queries think, greedy K=1): "
          f"{before[key]:.4f} -> {after[key]:.4f}")
    merge_lora(model)
    save_model(model, args.output)
    print(f"saved {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
