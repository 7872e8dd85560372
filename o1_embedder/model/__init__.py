"""The think-then-embed Sentence-Transformers module, its formats and the embedded default backbone."""

from o1_embedder.model.default import DEFAULT_PROMPT_FORMAT, default_backbone_path
from o1_embedder.model.encoding import GenerationSettings
from o1_embedder.model.formats import SPECIAL_TOKENS, PromptFormat, SequenceBuilder
from o1_embedder.model.loading import (
                                       build_model,
                                       convert_checkpoint,
                                       default_model,
                                       load_model,
                                       materialize_default,
                                       save_model,
                                       wrap,
)
from o1_embedder.model.module import O1Embedder

__all__ = [
    "DEFAULT_PROMPT_FORMAT", "GenerationSettings", "O1Embedder", "PromptFormat", "SPECIAL_TOKENS", "SequenceBuilder",
    "build_model", "convert_checkpoint", "default_backbone_path", "default_model", "load_model", "materialize_default",
    "save_model", "wrap",
]
