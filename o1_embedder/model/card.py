"""The model card (README.md) written into every saved o1-embedder model folder.

It shows the real usage (``pip install o1-embedder``, ``trust_remote_code=True``, ``encode_query`` /
``encode_document``), the saved thinking settings and what thinking costs, and the paper citation. The
folder does not carry the package's code: loading needs ``pip install o1-embedder`` (one version of the
code for every folder, instead of a copy per folder that would age with it), and the card says so first.
"""

from __future__ import annotations

import json
from typing import Any

CITATION = """@article{yan2025o1embedder,
  title   = {O1 Embedder: Let Retrievers Think Before Action},
  author  = {Yan, Ruiran and Liu, Zheng and Lian, Defu},
  journal = {arXiv preprint arXiv:2502.07555},
  year    = {2025}
}"""


def usage_block(name: str) -> str:
    """How to load and use the folder ``name``: the package to install, ``trust_remote_code``, query and
    document paths (the Usage section of every card this package writes or completes)."""
    return f"""This folder needs the `o1-embedder` package (it holds the model's module class):

```bash
pip install o1-embedder
```

```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("{name}", trust_remote_code=True)   # or: o1_embedder.load_model("{name}")
queries = model.encode_query(["why is the sky blue"])             # thinks, then embeds
queries_fast = model.encode_query(["why is the sky blue"], think=False)  # embeds the query alone
documents = model.encode_document(["Rayleigh scattering makes the sky blue."])
print(model.similarity(queries, documents))
```

`model.encode(texts)` embeds documents; `encode(texts, prompt_name="query")` equals `encode_query`.
Benchmark it with `o1-embedder mteb run -m {name} -t TASK` (plain `mteb run -m` cannot load this folder: mteb
knows only its registry and the Hub, and `o1-embedder mteb run` registers the model first)."""


class UsageSnippet:
    """The usage part of the card Sentence-Transformers writes when it saves a trained model (its own snippet
    would load the folder without ``trust_remote_code`` and without this package). Installed on a model's card
    data by :func:`install_usage`; Sentence-Transformers' card keeps everything else it records (training data,
    losses, hyperparameters, logs, evaluation scores). A class, not a closure, so the model stays picklable."""

    def __init__(self, card_data: Any):
        self.card_data = card_data

    def __call__(self) -> str:
        return usage_block(self.card_data.model_id or "path/to/this-folder")


def install_usage(model: Any) -> None:
    """Make the card Sentence-Transformers generates for ``model`` (after training) show this package's usage."""
    card_data = getattr(model, "model_card_data", None)
    if card_data is not None and not isinstance(getattr(card_data, "generate_usage_snippet", None), UsageSnippet):
        card_data.generate_usage_snippet = UsageSnippet(card_data)


def model_card(module, *, name: str, base_model: str | None, license: str | None, backbone: str | None = None) -> str:
    """The README.md of a saved model folder named ``name`` (the folder name users load).

    ``base_model`` (a hub id) goes into the card's header; ``backbone`` names a backbone that has none (a local
    folder) in the text only."""
    gen = module.generation_settings
    samples = module.num_thoughts if gen.do_sample else 1
    decoding = (f"sampled (temperature {gen.temperature}, top-p {gen.top_p}, seed {gen.seed})"
                if gen.do_sample else "greedy")
    header: dict[str, Any] = {"library_name": "sentence-transformers", "pipeline_tag": "sentence-similarity",
                              "language": ["en"],
                              "tags": ["sentence-transformers", "o1-embedder", "think-then-embed", "retrieval",
                                       "feature-extraction"]}
    if base_model:
        header["base_model"] = base_model
    if license:
        header["license"] = license
    front = "\n".join(f"{key}: {json.dumps(value)}" for key, value in header.items())
    settings = module.get_config_dict()
    return f"""---
{front}
---

# {name}

An [o1-embedder](https://pypi.org/project/o1-embedder/) model: think-then-embed retrieval (O1 Embedder,
arXiv 2502.07555) on the causal LM `{base_model or backbone or 'of this folder'}`. A query is embedded after
the model writes a short thought about it (query + thought, one pass); documents are embedded directly.

## Usage

{usage_block(name)}

## Thinking cost

Each query generates up to {gen.max_new_tokens} tokens x {samples} thought(s) ({decoding}) before it is
embedded: on a CPU that is several times the cost of embedding the query alone. Thoughts and their
embeddings are cached on disk (`~/.cache/o1_embedder/thoughts.sqlite`), so a repeated query costs nothing.
Change the settings with `model[0].configure(num_thoughts=1, do_sample=False, max_new_tokens=32)`.

## Settings

| setting | value |
|---|---|
""" + "".join(f"| `{key}` | `{json.dumps(value)}` |\n" for key, value in settings.items()) + f"""
## Citation

```bibtex
{CITATION}
```
"""
