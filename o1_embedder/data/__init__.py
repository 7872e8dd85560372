"""Data loading: BEIR-format retrieval collections (and the shipped Cranfield copy)."""

from .beir import (
    MAX_PROBLEMS,
    BeirDataset,
    BeirFormatError,
    cranfield_path,
    document_text,
    load_beir,
    load_cranfield,
)

__all__ = [
    "MAX_PROBLEMS",
    "BeirDataset",
    "BeirFormatError",
    "cranfield_path",
    "document_text",
    "load_beir",
    "load_cranfield",
]
