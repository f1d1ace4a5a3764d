"""ZayaORTForCausalLM: a zaya-edge artifact behind transformers' `generate()` and pipelines.

The session is the runtime's DecoderSession (Artifact.open_session: custom ops, IO checks), so
there is one way to run an artifact; this class only converts tensors and keeps the states in
a ZayaStateCache between the calls generate() makes.

The methods live in a plain class and `model_class()` joins them to PreTrainedModel and
GenerationMixin on first use: importing zaya_edge never imports torch or transformers (the
runtime runs without them); a method reaches them through extra.py when it needs them.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from zaya_edge import artifact as A
from zaya_edge.errors import ArtifactError, ContextFullError, RequestError, first_line
from zaya_edge.runtime.engine import stop_token_ids
from zaya_edge.runtime.session import DecoderSession
from zaya_edge.runtime.tokenizer import Tokenizer

from .cache import cache_class
from .extra import extra

UNSUPPORTED = ("inputs_embeds", "labels", "output_attentions", "output_hidden_states", "output_router_logits")


@functools.cache
def cache_key() -> str:
    """generate() hands the states around as `cache` since transformers 5.24, as
    `past_key_values` before; the name follows the installed version (the forward takes both)."""
    fields = extra("transformers.modeling_outputs").CausalLMOutputWithPast.__dataclass_fields__
    return "cache" if "cache" in fields else "past_key_values"


def __getattr__(name: str):
    if name == "CACHE_KEY":  # a module constant to its users, computed when transformers is there
        return cache_key()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def model_class() -> type:
    """ZayaORTForCausalLM: the methods below on PreTrainedModel + GenerationMixin (built once)."""
    transformers = extra("transformers")
    # pipeline("text-generation") checks the model's class name against this table and logs an
    # error with every supported name when it is absent; the key is no config's model type, so
    # the Auto classes never resolve it.
    names = extra("transformers.models.auto.modeling_auto").MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    names.setdefault("zaya_edge_ort", "ZayaORTForCausalLM")
    return type("ZayaORTForCausalLM", (ArtifactCausalLM, transformers.PreTrainedModel, transformers.GenerationMixin),
                {"__module__": __name__, "__doc__": ArtifactCausalLM.__doc__})


class ArtifactCausalLM:
    """An artifact's decoder graph as a transformers causal LM (CPU tensors in and out)."""

    main_input_name = "input_ids"
    base_model_prefix = "zaya"
    _is_stateful = True  # transformers refuses assisted decoding itself, with its own message

    def __init__(self, session: DecoderSession, config, generation_config):
        super().__init__(config)
        self.session = session
        self.artifact = session.artifact
        self.generation_config = generation_config
        self._output_names = [o.name for o in session.session.get_outputs()]

    @classmethod
    def from_pretrained(cls, artifact_dir: str | os.PathLike | A.Artifact, *, threads: int | None = None,
                        provider: str = "cpu", custom_ops: str | bool | None = None,
                        verify: bool = False):
        """Open an artifact folder: its config.json, generation config and graph session.

        `custom_ops`: None uses the native kernels when built, False the graph's function
        bodies, a path that library (as everywhere in zaya-edge).
        """
        session = DecoderSession(artifact_dir, threads=threads, provider=provider, verify=verify,
                                 custom_ops=custom_ops)
        config = _model_config(session.artifact)
        return cls(session, config, _generation_config(session, config))

    # ---- what generate() and pipelines read ---------------------------------------------------
    @property
    def device(self):
        return extra("torch").device("cpu")  # onnxruntime copies in and out; tensors stay on the host

    @property
    def dtype(self):
        return extra("torch").float32

    @property
    def uses_native_kernels(self) -> bool:
        return self.session.uses_native_kernels

    def save_pretrained(self, *args, **kwargs):
        raise RequestError("an artifact folder is already the saved model: copy it, or re-export with zaya-edge export")

    def _prepare_cache_for_generation(self, generation_config, model_kwargs, *args, **kwargs) -> None:
        """generate() gets a ZayaStateCache (a DynamicCache has nowhere for the CCA states)."""
        if model_kwargs.get(cache_key()) is None and generation_config.use_cache is not False:
            model_kwargs[cache_key()] = self.new_cache()
            return
        super()._prepare_cache_for_generation(generation_config, model_kwargs, *args, **kwargs)  # a caller's cache

    def new_cache(self):
        return cache_class()(self.artifact.dims, self.artifact.context_length, self.artifact.manifest.kv_dtype)

    # ---- the call --------------------------------------------------------------------------
    def forward(self, input_ids, attention_mask=None, cache=None, use_cache: bool | None = None, **kwargs):
        """Run the graph on new tokens; positions come from the mask (RoPE counts real tokens).

        `cache` is updated in place and returned (a new one when None and `use_cache`).
        """
        asked = [k for k in UNSUPPORTED if kwargs.get(k) not in (None, False)]
        if asked:
            raise RequestError(f"{asked[0]} is not supported: the artifact's graph returns logits and states only")
        cache = cache if cache is not None else kwargs.get("past_key_values")  # the name before 5.24
        kept = cache if cache is not None else self.new_cache()
        if not isinstance(kept, cache_class()):
            raise RequestError(f"cache must be a ZayaStateCache (model.new_cache()), got {type(kept).__name__}")
        ids = _host_array(input_ids)
        if ids.ndim != 2 or not ids.size:
            raise RequestError(f"input_ids must be [batch, sequence] with at least one token, got {list(ids.shape)}")
        past = kept.get_seq_length()
        mask = _host_array(attention_mask) if attention_mask is not None else np.ones((ids.shape[0], past + ids.shape[1]), np.int64)
        self._check(ids, mask, past)
        logits, states = self._run(ids, mask, kept.feeds(ids.shape[0]))
        kept.store(states)
        keep = use_cache if use_cache is not None else self.config.use_cache
        out = {cache_key(): kept if keep or cache is not None else None}
        outputs = extra("transformers.modeling_outputs")
        return outputs.CausalLMOutputWithPast(logits=extra("torch").from_numpy(logits), **out)

    def _check(self, ids: np.ndarray, mask: np.ndarray, past: int) -> None:
        if mask.shape != (ids.shape[0], past + ids.shape[1]):
            raise RequestError(f"attention_mask must be [batch, {past} past + {ids.shape[-1]} new] columns, "
                               f"got {list(mask.shape)} for input_ids {list(ids.shape)}")
        if (ids.min() < 0 or ids.max() >= self.artifact.dims.vocab_size):
            raise RequestError(f"a token id is outside the vocabulary (size {self.artifact.dims.vocab_size})")
        if mask.shape[1] > self.artifact.context_length:
            raise ContextFullError(f"context full: {mask.shape[1]} positions needed, "
                                   f"the artifact supports {self.artifact.context_length}")

    def _run(self, ids: np.ndarray, mask: np.ndarray, past: dict) -> tuple[np.ndarray, dict]:
        """One graph call; several tokens over a past go row by row when batch > 1.

        onnxruntime's CPU GroupQueryAttention takes several new tokens over a past only for
        one row (runtime/batch.py prefills aside for the same reason).
        """
        n = ids.shape[0]
        if n > 1 and ids.shape[1] > 1 and mask.shape[1] > ids.shape[1]:
            parts = [self._run(ids[r : r + 1], mask[r : r + 1], {k: v[r : r + 1] for k, v in past.items()})
                     for r in range(n)]
            states = {k: np.concatenate([p[1][k] for p in parts]) for k in parts[0][1]}
            return np.concatenate([p[0] for p in parts]), states
        feed = {A.INPUT_IDS: ids, A.ATTENTION_MASK: mask, **past}
        outputs = dict(zip(self._output_names, self.session.run_feeds(feed)))
        return outputs[A.LOGITS], A.next_state(self.artifact.dims, outputs)


def _host_array(tensor) -> np.ndarray:
    array = tensor.detach().cpu().numpy() if isinstance(tensor, extra("torch").Tensor) else np.asarray(tensor)
    return np.ascontiguousarray(array, dtype=np.int64)


def _model_config(artifact: A.Artifact):
    """transformers' config from the artifact's config.json (its `zaya` model type)."""
    try:
        config = extra("transformers").AutoConfig.from_pretrained(str(artifact.path(A.CONFIG_FILE)))
    except (OSError, ValueError, KeyError) as exc:
        raise _unreadable(artifact, A.CONFIG_FILE, exc) from None
    config.use_cache = True
    return config


def _generation_config(session: DecoderSession, config):
    """generation_config.json when listed, with the runtime's stop tokens (as `zaya-edge run`)."""
    GenerationConfig = extra("transformers").GenerationConfig  # noqa: N806 (the class)
    artifact = session.artifact
    gen = GenerationConfig.from_model_config(config)
    if artifact.has(A.GENERATION_CONFIG_FILE):
        artifact.path(A.GENERATION_CONFIG_FILE)  # listed and confined to the folder
        try:
            gen = GenerationConfig.from_pretrained(artifact.folder, config_file_name=A.GENERATION_CONFIG_FILE)
        except (OSError, ValueError, KeyError) as exc:
            raise _unreadable(artifact, A.GENERATION_CONFIG_FILE, exc) from None
    eos = stop_token_ids(artifact, Tokenizer.from_artifact(artifact))  # as the Engine stops
    gen.eos_token_id = eos if len(eos) > 1 else eos[0]
    if gen.pad_token_id is None:
        gen.pad_token_id = artifact.dims.pad_token_id if artifact.dims.pad_token_id is not None else eos[0]
    return gen


def _unreadable(artifact: A.Artifact, name: str, exc: Exception) -> ArtifactError:
    first = first_line(exc)
    return ArtifactError(f"{name} in {artifact.folder} cannot be read by transformers (zaya needs >=5.23): {first}")
