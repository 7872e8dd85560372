"""Staged, resumable runs over the concepts of the package: domain adaptation to a user's corpus
(:mod:`~o1_embedder.pipeline.adapt`) on the run folder machinery of :mod:`~o1_embedder.pipeline.runner`."""
