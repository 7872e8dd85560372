"""``O1Embedder``: the Sentence-Transformers input module that thinks, then embeds.

It owns a causal LM (``AutoModelForCausalLM``) and its tokenizer. ``encode_query`` (``task="query"``)
generates ``num_thoughts`` thoughts per query and reads the ``<emb>`` state from generation's own KV
cache; ``encode_document`` (and plain ``encode``) embed ``text + <emb>`` directly. Embeddings are the
final-layer ``<emb>`` state, L2-normalised; several thoughts are averaged and re-normalised.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import warnings
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sentence_transformers.base.modules import InputModule
from transformers import AutoModelForCausalLM, AutoTokenizer

from o1_embedder.generation.backends import float_dtype
from o1_embedder.generation.cache import ThoughtCache
from o1_embedder.generation.settings import GenerationSettings
from o1_embedder.model import thinking
from o1_embedder.model.card import install_usage
from o1_embedder.model.encoding import decoder, left_pad, position_ids
from o1_embedder.model.folder import CONFIG_FILE, check_finite, check_model_folder, load_weights
from o1_embedder.model.formats import PromptFormat, SequenceBuilder, validate_texts
from o1_embedder.model.routing import (  # noqa: F401  (imported from here before)
    DOCUMENT_NAMES,
    QUERY_NAMES,
    QUERY_PROMPT,
    check_collator_routing,
    prompt_route,
)
from o1_embedder.model.tokens import add_special_tokens, ensure_pad_token

logger = logging.getLogger(__name__)


class _NoTokenEmbeddings:
    """Stands in for per-token embeddings, which this model does not produce (its embedding is one state)."""

    def __iter__(self):
        raise ValueError("output_value='token_embeddings' is not available for o1-embedder models: the embedding is "
                         "the final state at <emb> (use the default output_value='sentence_embedding')")

    def __getitem__(self, index):
        return self


class O1Embedder(InputModule):
    """Think-then-embed module around any causal LM.

    Args:
        model: a causal LM (``PreTrainedModel`` with a generation head), possibly peft-wrapped.
        tokenizer: its tokenizer; must already contain the format's special tokens
            (use :meth:`from_backbone` to add them).
        prompt_format: the sequence format (dict or :class:`PromptFormat`).
        max_query_tokens / max_document_tokens: truncation of the user text only, never of format tokens.
        num_thoughts: K thoughts per query, embeddings averaged. Greedy decoding makes the K thoughts
            identical, so with ``do_sample=False`` one thought is generated.
        generation: :class:`GenerationSettings` (or dict): max_new_tokens, do_sample, temperature, top_p, seed.
        think: whether ``encode_query`` thinks by default (``encode_query(..., think=False)`` overrides per call).
        query_weight: weight of the query's own embedding (``prompt + <emb>``, no thought) in a thinking query's
            embedding: ``normalize((1 - w) * thoughts + w * query)`` with ``thoughts`` the normalised mean of the
            K thought embeddings. 0 (default) is the paper's method; 0.5 weighs the two views equally. The query
            embedding is read in generation's prefill, so it costs one token per query.
        use_thought_cache: look thoughts up in / store them to the thought cache.
        thought_cache: a :class:`ThoughtCache`; ``None`` means the one from ``O1_EMBEDDER_THOUGHT_CACHE``
            or the default location. Not saved with the model (it is a property of the machine).
    """

    config_file_name = CONFIG_FILE
    # Settings saved with the model. Where thoughts are cached is a property of the machine, not of the model:
    # ``use_thought_cache`` / ``thought_cache`` are runtime arguments, never saved.
    config_keys = ["prompt_format", "max_query_tokens", "max_document_tokens", "num_thoughts", "generation",
                   "think", "query_weight", "dtype"]
    forward_kwargs = {"task", "think"}
    #: settings that change query embeddings only (documents never think): corpus caches ignore them
    query_only_settings = ("num_thoughts", "generation", "think", "max_query_tokens", "query_weight")
    save_in_root = True

    def __init__(self, model, tokenizer, *, prompt_format: PromptFormat | dict | None = None,
                 max_query_tokens: int = 64, max_document_tokens: int = 512, num_thoughts: int = 3,
                 generation: GenerationSettings | dict | None = None, think: bool = True, query_weight: float = 0.0,
                 use_thought_cache: bool = True, thought_cache: ThoughtCache | None = None):
        super().__init__()
        _check_setting("num_thoughts", num_thoughts, int, minimum=1)
        _check_setting("max_query_tokens", max_query_tokens, int, minimum=1)
        _check_setting("max_document_tokens", max_document_tokens, int, minimum=1)
        _check_setting("think", think, bool)
        _check_setting("use_thought_cache", use_thought_cache, bool)
        _check_weight(query_weight)
        self.model = model
        if tokenizer.pad_token_id is None:  # pad with eos, on a copy: the caller's tokenizer is left as it was
            tokenizer = copy.deepcopy(tokenizer)
            ensure_pad_token(tokenizer)
        self.tokenizer = tokenizer
        if not isinstance(prompt_format, (PromptFormat, dict, type(None))):
            raise TypeError(f"setting 'prompt_format' must be a PromptFormat or dict, "
                            f"got {type(prompt_format).__name__}")
        self._format = prompt_format if isinstance(prompt_format, PromptFormat) else \
            PromptFormat.from_dict(prompt_format or {})
        if not isinstance(generation, (GenerationSettings, dict, type(None))):
            raise TypeError(f"setting 'generation' must be a GenerationSettings or dict, "
                            f"got {type(generation).__name__}")
        self._generation = generation if isinstance(generation, GenerationSettings) else \
            GenerationSettings.from_dict(generation or {})
        self.max_query_tokens = max_query_tokens
        self.max_document_tokens = max_document_tokens
        self.num_thoughts = num_thoughts
        self.think = think
        self.query_weight = float(query_weight)
        self.use_thought_cache = use_thought_cache
        self._thought_cache = thought_cache
        self._fingerprint: tuple[int, str] | None = None
        self.builder = SequenceBuilder(tokenizer, self._format, max_query_tokens, max_document_tokens)
        self._check_context()
        self.stats = {"generate_calls": 0, "thoughts_generated": 0, "thoughts_from_cache": 0, "generated_tokens": 0}
        self.decode_rows = 256
        #: ``None``, or the quantisation applied in this process (:meth:`quantize_int8`); never saved
        self.quantized: str | None = None
        #: show a progress bar while thinking: None = when a call generates many tokens, True / False = always / never
        self.progress: bool | None = None
        #: where thoughts come from instead of the local decoding loop, e.g. a
        #: :class:`~o1_embedder.generation.remote.CompletionsThoughtWriter` (``serve --generation-url``)
        self.thought_writer: Any = None
        self._warned: set[str] = set()

    # ----------------------------------------------------------------------------------------- config
    @property
    def prompt_format(self) -> dict:
        return self._format.to_dict()

    @property
    def generation(self) -> dict:
        return asdict(self._generation)

    @property
    def generation_settings(self) -> GenerationSettings:
        return self._generation

    @generation_settings.setter
    def generation_settings(self, value: GenerationSettings) -> None:
        self._generation = value

    def configure(self, *, num_thoughts: int | None = None, think: bool | None = None,
                  query_weight: float | None = None, **generation) -> O1Embedder:
        """Change thinking settings in place (``num_thoughts``, ``think``, ``query_weight``, and the generation
        settings ``max_new_tokens``, ``do_sample``, ``temperature``, ``top_p``, ``seed``)."""
        if query_weight is not None:
            _check_weight(query_weight)
            self.query_weight = float(query_weight)
        if num_thoughts is not None:
            _check_setting("num_thoughts", num_thoughts, int, minimum=1)
            self.num_thoughts = num_thoughts
        if think is not None:
            _check_setting("think", think, bool)
            self.think = think
        if generation:
            settings = self._generation.replace(**generation)
            self._check_context(max_new_tokens=settings.max_new_tokens)
            self._generation = settings
        return self

    def apply_overrides(self, *, num_thoughts: int | None = None, max_new_tokens: int | None = None,
                        greedy: bool | None = None, query_weight: float | None = None) -> O1Embedder:
        """What command-line overrides do: each value given (not ``None``) replaces the model's setting;
        ``greedy=True`` decodes greedily, ``greedy=False`` samples, ``None`` keeps the model's choice."""
        changes: dict[str, Any] = {}
        if max_new_tokens is not None:
            changes["max_new_tokens"] = max_new_tokens
        if greedy is not None:
            changes["do_sample"] = not greedy
        return self.configure(num_thoughts=num_thoughts, query_weight=query_weight, **changes)

    @property
    def dtype(self) -> str:
        """The backbone's floating-point type (``float32``, ``bfloat16`` ...): saved, and used again at load."""
        return str(next(self.model.parameters()).dtype).replace("torch.", "")

    @property
    def thought_cache(self) -> ThoughtCache | None:
        """The cache thoughts are looked up in; ``None`` when off, or when sampling without a seed (a fresh
        random thought each call is what ``seed=None`` asks for)."""
        if not self.use_thought_cache or (self._generation.do_sample and self._generation.seed is None):
            return None
        if self._thought_cache is None:
            self._thought_cache = ThoughtCache.from_env()
        return self._thought_cache

    @thought_cache.setter
    def thought_cache(self, cache: ThoughtCache | None) -> None:
        self._thought_cache = cache
        self.use_thought_cache = cache is not None

    def _check_context(self, *, max_query_tokens: int | None = None, max_document_tokens: int | None = None,
                       max_new_tokens: int | None = None) -> None:
        """Refuse lengths the backbone has no positions for (a model with learned absolute positions fails on
        every query or document past them; others silently degrade)."""
        context = getattr(getattr(self.model, "config", None), "max_position_embeddings", None)
        if not isinstance(context, int) or isinstance(context, bool) or context < 1:
            return
        query = self.max_query_tokens if max_query_tokens is None else max_query_tokens
        document = self.max_document_tokens if max_document_tokens is None else max_document_tokens
        new = self._generation.max_new_tokens if max_new_tokens is None else max_new_tokens
        query_format = len(self.builder.query_prompts([""])[0])
        document_format = len(self.builder.documents([""])[0])
        if query_format + query + new + 2 > context:  # + eos and <emb>
            raise ValueError(f"max_query_tokens={query} + max_new_tokens={new} + {query_format + 2} format tokens "
                             f"exceed the backbone's context of {context} positions (max_position_embeddings)")
        if document_format + document > context:
            raise ValueError(f"max_document_tokens={document} + {document_format} format tokens exceed the "
                             f"backbone's context of {context} positions (max_position_embeddings)")

    @property
    def decode_rows(self) -> int:
        """Rows (query x sample) decoded together at most; a property of the machine, not saved."""
        return self._decode_rows

    @decode_rows.setter
    def decode_rows(self, value: int) -> None:
        _check_setting("decode_rows", value, int, minimum=1)
        self._decode_rows = value

    @property
    def max_seq_length(self) -> int:
        return self.max_document_tokens

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        """Sentence-Transformers' truncation length sets the *document* limit; queries keep ``max_query_tokens``
        (their limit is part of the thought cache key; change it with ``configure_lengths``)."""
        _check_setting("max_seq_length", value, int, minimum=1)
        self._check_context(max_document_tokens=value)
        self.max_document_tokens = value
        self.builder.max_document_tokens = value

    def configure_lengths(self, *, max_query_tokens: int | None = None, max_document_tokens: int | None = None
                          ) -> O1Embedder:
        """Change the truncation of query and/or document text (format tokens are never truncated)."""
        if max_query_tokens is not None:
            _check_setting("max_query_tokens", max_query_tokens, int, minimum=1)
            self._check_context(max_query_tokens=max_query_tokens)
            self.max_query_tokens = self.builder.max_query_tokens = max_query_tokens
        if max_document_tokens is not None:
            self.max_seq_length = max_document_tokens
        return self

    def quantize_int8(self) -> O1Embedder:
        """Opt-in CPU mode: int8 dynamic quantisation of every linear layer (``torch.ao.quantization``).

        Decoding on a CPU reads every weight once per step, so 4x smaller weights make thinking cheaper. Retrieval
        quality can suffer badly: on the shipped default, all of Cranfield, nDCG@10 fell from 0.2612 to 0.1026
        without thinking and from 0.2675 to 0.1328 thinking (``examples/ablate_thinking.py``); measure it on your
        data before use. Irreversible for this module; its fingerprint changes, so thoughts and corpus embeddings
        are cached apart. Not for training.
        """
        if self.model.device.type != "cpu":
            raise ValueError("int8 dynamic quantisation runs on the CPU only")
        self._warn_once("int8", "o1-embedder: int8 dynamic quantisation can cost much retrieval quality (the shipped "
                                "default lost over half its Cranfield nDCG@10); measure it on your data")
        from torch.ao.quantization import quantize_dynamic

        self.model = quantize_dynamic(self.model, {torch.nn.Linear}, dtype=torch.qint8)
        self.quantized = "int8-dynamic"
        self._fingerprint = None
        return self

    def get_embedding_dimension(self) -> int:
        return self.model.config.get_text_config().hidden_size

    @property
    def special_token_ids(self) -> list[int]:
        return list(self.tokenizer.convert_tokens_to_ids(self._format.special_tokens))

    def fingerprint(self) -> str:
        """Hash of the backbone: config, tokenizer size, and per weight its shape, dtype, sum, norm and a strided
        sample (so a change to any single element changes the fingerprint).

        Recomputed only when a parameter was modified in place since the last call (optimizer steps,
        merges), which torch tracks with each tensor's version counter.
        """
        params = list(self.model.named_parameters())
        version = sum(p._version for _, p in params)
        if self._fingerprint is not None and self._fingerprint[0] == version:
            return self._fingerprint[1]
        digest = hashlib.sha256()
        digest.update(self.model.config.to_json_string(use_diff=False).encode())
        digest.update(f"quantized={self.quantized}".encode())
        digest.update(f"vocab={len(self.tokenizer)}".encode())
        with torch.no_grad():
            for name, param in sorted(params, key=lambda item: item[0]):
                flat = param.detach().reshape(-1)
                steps = min(flat.numel(), 512)
                index = torch.arange(steps, device=flat.device) * (flat.numel() - 1) // max(steps - 1, 1)
                digest.update(f"{name}:{tuple(param.shape)}:{param.dtype}".encode())
                # float64 reductions rounded to float32: the same bytes whatever the thread count (a float32
                # sum's last bits depend on how a parallel reduction splits the tensor)
                summary = torch.stack([flat.sum(dtype=torch.float64), torch.linalg.vector_norm(flat.double())]).float()
                digest.update(summary.cpu().numpy().tobytes())
                digest.update(flat[index].float().cpu().numpy().tobytes())
        self._fingerprint = (version, digest.hexdigest()[:32])
        return self._fingerprint[1]

    # ------------------------------------------------------------------------------------ preprocess
    def preprocess(self, inputs, prompt: str | None = None, task: str | None = None, think: bool | None = None,
                   **kwargs) -> dict[str, Any]:
        """Token ids for a batch. Routing: ``task="query"`` (``encode_query``, a Router mapping), the query
        prompt (``encode(..., prompt_name="query")`` or another query name of :data:`QUERY_NAMES`, ``QUERY_PROMPT``
        put before a text by a tool that applies prompts as text) or a query prefix as the prompt
        (``prompt="query: "``) embeds queries; anything else embeds documents (a document prefix such as
        ``"passage: "`` is dropped: the model was not trained with it). In training mode a query never
        thinks: generation cannot run under gradients, so it is embedded in the no-thought format."""
        route = prompt_route(prompt)
        if route is not None:
            task = route if task is None or route == "query" else task
            explicit_document, prompt = route == "document", None
        else:
            explicit_document = prompt == ""  # prompt_name="document" resolves to the empty document prompt
        texts = validate_texts(inputs, "queries" if task == "query" else "inputs")
        if task is None and texts and all(t.startswith(QUERY_PROMPT) for t in texts):
            task, texts = "query", [t[len(QUERY_PROMPT):] for t in texts]
        if prompt:
            texts = [prompt + t for t in texts]
        if task is None and not explicit_document:
            check_collator_routing()
            self._warn_once("document-route", "o1-embedder: encode() without a task embeds its inputs as documents "
                            "(no query format, no thinking); use encode_query / encode_document, or "
                            "prompt_name='query' / 'document'")
        pad_id = self.tokenizer.pad_token_id
        if task == "query":
            wants_thought = self.think if think is None else think
            if wants_thought and self.training:
                self._warn_once("training-think", "o1-embedder: the module is in training mode, where it never "
                                "generates; queries are embedded in the no-thought format (train thoughts with "
                                "JointCollator + JointLoss)")
                wants_thought = False
            if wants_thought:
                return {"query_texts": texts, "prompt_ids": self.builder.query_prompts(texts)}
            sequences = self.builder.query_without_thought(texts)
        else:
            sequences = self.builder.documents(texts)
        input_ids, attention_mask = left_pad(sequences, pad_id, "cpu")
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning("%s", message)
            warnings.warn(message, stacklevel=3)

    # --------------------------------------------------------------------------------------- forward
    def forward(self, features: dict[str, Any], task: str | None = None, think: bool | None = None,
                **kwargs) -> dict[str, Any]:
        if "prompt_ids" in features:
            if torch.is_grad_enabled() and self.training:
                raise RuntimeError("o1-embedder cannot think under gradients (generation is not differentiable); "
                                   "train with JointCollator + JointLoss, or embed queries without thinking")
            # Thoughts are not put in the features: Sentence-Transformers splits only tensors per input.
            # Use ``think_and_embed`` to get them.
            features["sentence_embedding"], _ = self.think_and_embed(features["query_texts"], features["prompt_ids"])
            features["token_embeddings"] = _NoTokenEmbeddings()
            # Sentence-Transformers reads the mask beside the token embeddings; the stand-in then explains
            features.setdefault("attention_mask", _NoTokenEmbeddings())
            return features
        mask = features["attention_mask"]
        hidden = decoder(self.model)(input_ids=features["input_ids"], attention_mask=mask,
                                     position_ids=position_ids(mask), use_cache=False).last_hidden_state
        features["sentence_embedding"] = F.normalize(hidden[:, -1].float(), dim=-1)
        features["token_embeddings"] = _NoTokenEmbeddings()
        if "labels" in features:
            # Training: the same pass gives the thought logits, with the LM head applied only at the
            # positions that predict a thought token (or its eos), never over the whole sequence.
            targets = features["labels"][:, 1:]
            selected = targets != -100
            features["thought_logits"] = self.model.get_output_embeddings()(hidden[:, :-1][selected])
            features["thought_targets"] = targets[selected]
        return features

    def cached_query_embeddings(self, queries: list[str]) -> list[np.ndarray | None]:
        """For each query, its thinking embedding when the thought cache holds all its K thoughts with their
        embeddings, else ``None``; runs no model (:func:`o1_embedder.model.thinking.cached_query_embeddings`)."""
        return thinking.cached_query_embeddings(self, queries)

    def thinking_stream(self) -> thinking.ThinkingStream:
        """Queries that join and leave a running decode (continuous batching): see :class:`ThinkingStream`."""
        return thinking.ThinkingStream(self)

    def think_and_embed(self, queries: list[str], prompt_ids: list[list[int]] | None = None
                        ) -> tuple[torch.Tensor, list[list[str]]]:
        """Embed queries with thinking. Returns ``(embeddings (n, hidden), thoughts [n][K])``.

        Thoughts found in the thought cache come with their embedding (no model call); a cached thought
        without one is embedded with one forward pass over ``prompt + thought + eos + <emb>``. The others
        are generated and embedded from generation's KV cache (:mod:`o1_embedder.model.thinking`).
        """
        return thinking.think_and_embed(self, queries, prompt_ids)

    # ------------------------------------------------------------------------------- save and load
    def on_model_ready(self, model) -> None:
        """Sentence-Transformers' construction hook, however the model was built or loaded (``load_model``,
        ``SentenceTransformer(path, trust_remote_code=True)``): the card a save after training writes shows this
        package's usage, not a snippet that cannot load the folder."""
        install_usage(model)

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        if not safe_serialization:
            raise ValueError("o1-embedder models are saved as safetensors only")
        if self.quantized:
            raise ValueError(f"a {self.quantized} quantised module is not saved: save the float model and quantise "
                             f"after loading")
        model = self.model
        if hasattr(model, "merge_and_unload") and hasattr(model, "peft_config"):
            raise ValueError("Merge LoRA adapters before saving (o1_embedder.training merges them for you)")
        choice = getattr(self, "dtype_choice", None) or {}
        if choice.get("reason", "").startswith("automatic") and choice.get("dtype") != choice.get("loaded"):
            warnings.warn(f"o1-embedder: saving the weights in {choice['dtype']}, the type they were cast to "
                          f"automatically when loaded ({choice['loaded']} before); load with dtype='float32' to "
                          f"save float32 weights", stacklevel=2)
        model.save_pretrained(output_path, safe_serialization=True)
        self.tokenizer.save_pretrained(output_path)
        self.save_config(output_path)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "",  # type: ignore[override]
             token: bool | str | None = None,
             cache_folder: str | None = None, revision: str | None = None, local_files_only: bool = False,
             model_kwargs: dict[str, Any] | None = None, processor_kwargs: dict[str, Any] | None = None,
             **kwargs) -> O1Embedder:
        hub = {"subfolder": subfolder, "token": token, "cache_folder": cache_folder, "revision": revision,
               "local_files_only": local_files_only}
        try:
            config = cls.load_config(model_name_or_path, **hub)
        except ValueError as err:  # json.JSONDecodeError included
            raise ValueError(f"{os.path.join(model_name_or_path, CONFIG_FILE)}: not valid JSON ({err})") from err
        local = cls.load_dir_path(model_name_or_path, **hub)  # None where there is no such folder
        if not local or not os.path.isfile(os.path.join(local, CONFIG_FILE)):  # a file of {} means all defaults
            raise FileNotFoundError(f"{model_name_or_path}: no {CONFIG_FILE}; is this an o1-embedder model folder?")
        check_model_folder(local)
        config_path = os.path.join(local, CONFIG_FILE)
        if not isinstance(config, dict):
            raise ValueError(f"{config_path}: expected a JSON object, got {type(config).__name__}")
        unknown = set(config) - set(cls.config_keys) - {"use_thought_cache"}
        if unknown:
            raise ValueError(f"{config_path}: unknown field(s) {sorted(unknown)}")
        config.pop("use_thought_cache", None)  # written by earlier versions; a runtime setting now
        dtype = config.pop("dtype", "float32")
        try:
            dtype = float_dtype(dtype)
        except ValueError as err:
            raise ValueError(f"{config_path}: field 'dtype': {err}") from None
        model_kwargs = dict(model_kwargs or {})
        model_kwargs.setdefault("dtype", dtype)
        model = load_weights(local, model_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(local, trust_remote_code=False, **(processor_kwargs or {}))
        try:
            return cls(model, tokenizer, **config)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{config_path}: {err}") from err

    @classmethod
    def from_backbone(cls, model_name_or_path: str, *, model_kwargs: dict[str, Any] | None = None,
                      tokenizer_kwargs: dict[str, Any] | None = None, **settings) -> O1Embedder:
        """Build a module on any causal LM (hub id, local folder, or GGUF via ``model_kwargs={"gguf_file":..}``).

        The format's special tokens are added when missing, their rows set to the mean of the existing rows.
        """
        model_kwargs = dict(model_kwargs or {})
        model_kwargs.setdefault("dtype", torch.float32)
        tokenizer_kwargs = dict(tokenizer_kwargs or {})
        if "gguf_file" in model_kwargs:
            tokenizer_kwargs.setdefault("gguf_file", model_kwargs["gguf_file"])
        model = AutoModelForCausalLM.from_pretrained(model_name_or_path, **model_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(model_name_or_path, **tokenizer_kwargs)
        return cls.from_model(model, tokenizer, **settings)

    @classmethod
    def from_model(cls, model, tokenizer, **settings) -> O1Embedder:
        """Wrap an in-memory causal LM and tokenizer, adding the format's special tokens if missing."""
        fmt = settings.get("prompt_format")
        fmt = fmt if isinstance(fmt, PromptFormat) else PromptFormat.from_dict(fmt or {})
        tokenizer = copy.deepcopy(tokenizer)  # the caller's tokenizer is left as it was
        ensure_pad_token(tokenizer)
        add_special_tokens(model, tokenizer, fmt.special_tokens)
        if model.generation_config is not None and model.generation_config.pad_token_id is None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
        return cls(model, tokenizer, **{**settings, "prompt_format": fmt})

    def __repr__(self) -> str:
        return (f"O1Embedder(backbone={type(self.model).__name__}, num_thoughts={self.num_thoughts}, "
                f"think={self.think}, generation={self.generation})")


def _check_weight(value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"setting 'query_weight' must be a number, got {type(value).__name__} {value!r}")
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise ValueError(f"setting 'query_weight' must be between 0 and 1, got {value}")


def _check_setting(name: str, value, kind: type, minimum: int | None = None) -> None:
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise TypeError(f"setting {name!r} must be {kind.__name__}, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"setting {name!r} must be >= {minimum}, got {value}")


__all__ = ["O1Embedder", "check_finite", "check_model_folder"]
