"""MTEB (2.26) integration, one idea per module.

- ``options``: the thinking options (one per :class:`~o1_embedder.generation.GenerationSettings` field, plus
  ``think``, ``num_thoughts``, the thought cache switch, batch sizes, ``model_kwargs``), declared once; the wrapper's
  keywords, the ``ModelMeta`` experiment kwargs and the ``o1-embedder mteb run`` flags come from them.
- ``wrapper``: :class:`O1EmbedderEncoderWrapper`, mteb's Sentence-Transformers wrapper whose queries think
  (``encode_query``) while documents are embedded directly (``encode_document``).
- ``meta``: :func:`o1_model_meta`, an ``mteb.ModelMeta`` read from a model's files (a folder, a hub id from the local
  Hugging Face cache, or ``"o1-embedder"``, the embedded default) without loading the weights.
- ``tasks``: :func:`beir_task`, any BEIR folder as an mteb retrieval task, so ``mteb.evaluate`` runs offline.
- ``registry``: :func:`register` / :func:`registered`, so ``mteb.get_model(meta.name)`` and ``mteb run -m`` find
  the model (the one place that edits mteb's private registries).
- ``cli``: ``o1-embedder mteb run -m MODEL [--beir-task DIR] [thinking flags] [mteb's flags]``.

Result files: mteb stores results under ``{output}/results/{name with / -> __}/{revision}/{task}.json``. The
revision of a local folder is a content hash of its files, so a retrained model never overwrites (or, with mteb's
default ``only-missing`` strategy, silently reuses) the results of the previous one. Thinking options passed to the
loader (``think``, ``num_thoughts``, ...) become mteb *experiment kwargs* and results go to
``.../{revision}/experiments/{think_False__...}/{task}.json``, apart from the model's default settings. Those that
change scores are also part of the default name (``local/m-think_False``): mteb's ``to_dataframe`` averages every
experiment of one name.
"""

from .cli import main, run_mteb_cli
from .meta import DEFAULT_MODEL_META_NAME, folder_revision, o1_model_meta
from .options import WRAPPER_OPTIONS
from .registry import register, register_model, registered, unregister
from .tasks import LocalBeirRetrieval, beir_task, beir_task_class
from .wrapper import O1EmbedderEncoderWrapper

__all__ = [
    "DEFAULT_MODEL_META_NAME",
    "LocalBeirRetrieval",
    "O1EmbedderEncoderWrapper",
    "WRAPPER_OPTIONS",
    "beir_task",
    "beir_task_class",
    "folder_revision",
    "main",
    "o1_model_meta",
    "register",
    "register_model",
    "registered",
    "run_mteb_cli",
    "unregister",
]
