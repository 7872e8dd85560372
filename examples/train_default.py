"""Train the embedded default: the O1 Embedder recipe end to end on offline Wikipedia summaries, on a CPU.

    python examples/train_default.py --out runs/default            # every stage; re-run to resume
    python examples/train_default.py --out runs/default --ship     # then copy the adapter into the package

The stages live in the package (:mod:`o1_embedder.pipeline.recipe`); ``--help`` lists every option.
"""

import sys

from o1_embedder.pipeline.recipe import main

if __name__ == "__main__":
    sys.exit(main())
