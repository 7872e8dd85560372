"""Data: BEIR-format loading (and the shipped Cranfield copy), training records, thought synthesis
(exploration), the committee vote (refinement) and hard-negative mining.

The synthesis modules are imported on first use, so ``import o1_embedder.data`` stays light.
"""

from __future__ import annotations

import importlib

from .beir import (
    MAX_PROBLEMS,
    BeirDataset,
    BeirFormatError,
    cranfield_path,
    document_text,
    load_beir,
    load_cranfield,
)

_LAZY = {
    "JsonlWriter": "records", "RecordFile": "records", "RecordFormatError": "records", "Stage": "records",
    "records_from_beir": "records", "validate_record": "records",
    "ExplorationPrompt": "synthesis", "FewShotPool": "synthesis", "synthesize": "synthesis",
    "BM25Member": "committee", "DenseMember": "committee", "load_committee": "committee", "vote": "committee",
    "mine_negatives": "mining",
}

__all__ = [
    "MAX_PROBLEMS",
    "BeirDataset",
    "BeirFormatError",
    "cranfield_path",
    "document_text",
    "load_beir",
    "load_cranfield",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
