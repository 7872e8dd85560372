"""The thinking settings a command overrides on a loaded model: one declaration for ``eval``, ``serve`` and ``think``.

Each field is one command-line option of every command whose settings class inherits it (the options are generated
by :mod:`o1_embedder.options`), with one spelling and one meaning everywhere: ``None`` keeps the model's own setting,
``--greedy`` decodes greedily (one thought). ``mteb run`` keeps mteb's model-keyword options
(:mod:`o1_embedder.evaluation.mteb.options`), where every :class:`GenerationSettings` field is a keyword.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ThinkSettings", "ThinkingOverrides"]


def _opt(help: str) -> Any:
    return field(default=None, metadata={"help": help})


@dataclass(frozen=True)
class ThinkingOverrides:
    """Thinking settings to override on a loaded model; ``None`` keeps the model's setting."""

    num_thoughts: int | None = _opt("thoughts per query K, their embeddings averaged (default: the model's setting)")
    max_new_tokens: int | None = _opt("thought length limit in new tokens (default: the model's setting)")
    greedy: bool | None = _opt("greedy decoding, one thought per query (default: the model's setting)")
    query_weight: float | None = _opt("weight of the query's own embedding in a thinking query's embedding, 0-1 "
                                      "(default: the model's setting)")

    def __post_init__(self) -> None:
        for name in ("num_thoughts", "max_new_tokens"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"setting {name!r} must be an integer >= 1, got {value!r}")
        if self.greedy is not None and not isinstance(self.greedy, bool):
            raise TypeError(f"setting 'greedy' must be True, False or None, got {self.greedy!r}")
        weight = self.query_weight
        if weight is not None and (isinstance(weight, bool) or not isinstance(weight, (int, float))
                                   or not math.isfinite(weight) or not 0 <= weight <= 1):
            raise ValueError(f"setting 'query_weight' must be a number between 0 and 1, got {weight!r}")

    def overrides(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`O1Embedder.apply_overrides`."""
        return {"num_thoughts": self.num_thoughts, "max_new_tokens": self.max_new_tokens, "greedy": self.greedy,
                "query_weight": self.query_weight}

    def apply(self, module: Any) -> None:
        """Set every given value on ``module`` (an :class:`O1Embedder`)."""
        module.apply_overrides(**self.overrides())


@dataclass(frozen=True)
class ThinkSettings(ThinkingOverrides):
    """``o1-embedder think``: the thoughts a model writes for queries."""

    queries: list[str] = field(default_factory=list, metadata={"help": "queries to think about",
                                                                "positional": True, "nargs": "+"})
    model: str = field(default="o1-embedder", metadata={"help": "o1-embedder model folder or hub id (default: the "
                                                                "embedded default)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.queries or not all(isinstance(q, str) and q.strip() for q in self.queries):
            raise ValueError("think needs at least one query, each with some text")
