"""Generation: the one place thoughts are made (settings, seeded sampling, the decoding loop)."""

from o1_embedder.generation.decoding import Decoded, decode, left_pad, position_ids
from o1_embedder.generation.settings import GenerationSettings, row_seed

__all__ = ["Decoded", "GenerationSettings", "decode", "left_pad", "position_ids", "row_seed"]
