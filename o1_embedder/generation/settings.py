"""How thoughts are generated: one settings class and one seed derivation for the whole library."""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["GenerationSettings", "row_seed"]

#: the sampling temperatures accepted: logits / temperature stays finite in float32 between them
MIN_TEMPERATURE, MAX_TEMPERATURE = 1e-6, 1e6


def _check_type(name: str, value: Any, kind: type | tuple[type, ...], optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) and kind is not bool and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise TypeError(f"generation setting {name!r} must be {getattr(kind, '__name__', kind)}, got bool {value!r}")
    if not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise TypeError(f"generation setting {name!r} must be {expected}, got {type(value).__name__} {value!r}")


@dataclass
class GenerationSettings:
    """How thoughts are generated.

    ``do_sample=False`` is greedy decoding (``temperature`` and ``top_p`` are then unused); with sampling,
    every (query, sample index) row draws from its own generator seeded by :func:`row_seed` from ``seed``
    (``None``: a fresh random seed per row, not reproducible).
    """

    max_new_tokens: int = field(default=128, metadata={"help": "thought length limit (new tokens)"})
    do_sample: bool = field(default=True, metadata={"help": "sample with temperature and top-p",
                                                    "no_flag": "--greedy", "no_help": "greedy decoding (one text)"})
    temperature: float = field(default=0.1, metadata={"help": "sampling temperature (> 0)"})
    top_p: float = field(default=0.9, metadata={"help": "nucleus sampling: keep the tokens of this probability mass"})
    seed: int | None = field(default=42, metadata={"help": "base seed; every row (query and sample index, or "
                                                           "request) draws from a generator seeded from it"})

    @property
    def greedy(self) -> bool:
        return not self.do_sample

    def __post_init__(self) -> None:
        _check_type("max_new_tokens", self.max_new_tokens, int)
        _check_type("do_sample", self.do_sample, bool)
        _check_type("temperature", self.temperature, (int, float))
        _check_type("top_p", self.top_p, (int, float))
        _check_type("seed", self.seed, int, optional=True)
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not math.isfinite(self.temperature):
            raise ValueError(f"temperature must be a finite number, got {self.temperature}")
        if self.do_sample and not (MIN_TEMPERATURE <= self.temperature <= MAX_TEMPERATURE):
            # outside these, logits / temperature overflows float32 (or -inf / inf gives NaN) and sampling fails
            raise ValueError(f"temperature must be between {MIN_TEMPERATURE:g} and {MAX_TEMPERATURE:g} when "
                             f"do_sample=True, got {self.temperature}")
        if not (0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        self.temperature, self.top_p = float(self.temperature), float(self.top_p)  # 1 and 1.0: one setting

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationSettings:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown generation setting(s) {sorted(unknown)}; known: {[f.name for f in fields(cls)]}")
        return cls(**data)

    def replace(self, **changes) -> GenerationSettings:
        return GenerationSettings.from_dict({**asdict(self), **changes})

    def cache_key(self) -> str:
        sampling = f"sample:t={self.temperature!r},p={self.top_p!r},seed={self.seed!r}" if self.do_sample else "greedy"
        return f"{sampling};max_new={self.max_new_tokens}"


def row_seed(seed: int | None, *parts: str) -> int:
    """The seed of one row: derived from a base seed and the row's identity (query text, sample index, ...).

    ``None`` gives a fresh random seed.
    """
    if seed is None:
        import secrets

        return secrets.randbits(62)
    digest = hashlib.sha256("\x1f".join((str(seed), *map(str, parts))).encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "little") & (2**62 - 1)
