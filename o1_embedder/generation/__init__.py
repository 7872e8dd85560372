"""Generation: the one place thoughts are made.

``settings`` (one settings class, one seed derivation), ``decoding`` (the in-process decoding loop used by
the query module, the transformers backend and the server), ``cache`` (the persistent thought cache) and
the synthesis backends (``backends``: one interface; transformers, OpenAI-compatible server, vLLM).
"""

from o1_embedder.generation.decoding import Decoded, DecodeStream, decode, left_pad, position_ids
from o1_embedder.generation.settings import GenerationSettings, row_seed

__all__ = ["DecodeStream", "Decoded", "GenerationSettings", "decode", "left_pad", "position_ids", "row_seed"]
