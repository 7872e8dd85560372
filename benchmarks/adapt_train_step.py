"""Time and memory of an ``adapt`` training step by gradient checkpointing: every layer, every N-th, none.

    python benchmarks/adapt_train_step.py --run runs/adapt-cranfield [--every 1 2 0] [--steps 4]

Trains the run folder's own records (``RUN/train.jsonl``) with the run's training settings (``RUN/run.json``,
as ``o1-embedder adapt`` wrote them), for ``--steps`` steps per setting, each setting in its own process so
that its peak memory (resident set, sampled every 50 ms) is its own. ``--every 0`` is no checkpointing. Prints
seconds per step (median of the steps after the first, which also allocates) and peak memory, with the ratios
against the first setting given, run in the same invocation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _child(run: str, every: int, steps: int, queue) -> None:
    from train_step import _rss_mb  # this folder's resident-set reader
    from transformers import TrainerCallback

    import o1_embedder.training.trainer  # noqa: F401 (the module, not the package's re-export)
    from o1_embedder.training import TrainConfig, train

    trainer_module = sys.modules["o1_embedder.training.trainer"]
    settings = json.load(open(os.path.join(run, "run.json"), encoding="utf-8"))["stages"]["train"]
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    settings = {k: v for k, v in settings.items() if k in fields}
    out = tempfile.mkdtemp()
    config = TrainConfig(**{**settings, "data": os.path.join(run, "train.jsonl"), "output": os.path.join(out, "model"),
                            "max_steps": steps, "save_steps": 0, "gradient_checkpointing": every > 0,
                            "checkpoint_every_n_layers": max(every, 1)})
    marks: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *args, **kwargs):
            marks.append(time.perf_counter())

        def on_step_end(self, *args, **kwargs):
            marks.append(time.perf_counter())

    base = trainer_module.JointTrainer

    class TimedTrainer(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(Clock())

    trainer_module.JointTrainer = TimedTrainer
    peak = [0.0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mb() / 1024)
            time.sleep(0.05)

    threading.Thread(target=sample, daemon=True).start()
    train(config)
    done.set()
    seconds = [marks[i + 1] - marks[i] for i in range(0, len(marks) - 1, 2)]
    queue.put({"every": every, "seconds": statistics.median(seconds[1:] or seconds), "first": seconds[0],
               "peak_gb": peak[0]})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="an adapt run folder whose data stages are complete")
    parser.add_argument("--every", type=int, nargs="+", default=[1, 2, 0],
                        help="checkpoint every N-th decoder layer (0: no checkpointing); the first is the baseline")
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args(argv)
    for name in ("run.json", "train.jsonl"):
        if not os.path.isfile(os.path.join(args.run, name)):
            parser.error(f"{os.path.join(args.run, name)} is missing: run the adapt data stages first")
    if args.steps < 2 or any(e < 0 for e in args.every):
        parser.error("--steps must be >= 2 and --every values >= 0")
    ctx = mp.get_context("spawn")
    results = []
    for every in args.every:
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(args.run, every, args.steps, queue))
        proc.start()
        results.append(queue.get())
        proc.join()
    base = results[0]
    print(f"{args.steps} steps per setting of {args.run}'s training (median of the steps after the first)")
    print("\n| checkpointing | seconds a step | first step | peak memory (GB) | time / baseline | memory / baseline |"
          "\n|---|---:|---:|---:|---:|---:|")
    for r in results:
        name = "none" if r["every"] == 0 else ("every layer" if r["every"] == 1 else f"1 layer in {r['every']}")
        print(f"| {name} | {r['seconds']:.1f} | {r['first']:.1f} | {r['peak_gb']:.2f} | "
              f"{r['seconds'] / base['seconds']:.2f} | {r['peak_gb'] / base['peak_gb']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
