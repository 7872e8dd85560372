"""Validated file input and output: BEIR folders (and the shipped Cranfield copy) and record JSON lines."""

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
