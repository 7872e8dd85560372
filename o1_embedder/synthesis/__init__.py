"""Training data for thinking: exploration (candidate thoughts), the committee vote, hard-negative mining.

Imported on first use, so ``import o1_embedder.synthesis`` stays light.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "DEFAULT_INSTRUCTION": "explore", "ExplorationPrompt": "explore", "FewShotExample": "explore",
    "FewShotPool": "explore", "SynthesisReport": "explore", "synthesize": "explore",
    "DEFAULT_COMMITTEE": "vote", "BM25Member": "vote", "DenseMember": "vote", "VoteReport": "vote",
    "load_committee": "vote", "vote": "vote",
    "MiningResult": "mine", "mine_negatives": "mine",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
