"""zaya_edge.hf: a zaya-edge artifact in the Hugging Face ecosystem (the optional `[hf]` extra).

    model = ZayaORTForCausalLM.from_pretrained(artifact_dir)   # the runtime's DecoderSession
    tokenizer = load_tokenizer(artifact_dir)                   # the manifest's tokenizer.json
    model.generate(**tokenizer(text, return_tensors="pt"))     # greedy, sampling, beams, streamers
    pipeline("text-generation", model=model, tokenizer=tokenizer)

Built on transformers' `GenerationMixin`, not on optimum's `ORTModelForCausalLM`, because
optimum's class does not fit ZAYA (read in optimum-onnx 0.1.0, optimum 2.3.0):
  - its state handling knows key/value pairs only: it picks past inputs by ".key"/".value" in
    their names, regroups the presents into (key, value) tuples per layer, and its
    `_reorder_cache` reorders those tuples; ZAYA's conv window and delayed value
    (past_conv.i, past_recurrent.i) would never be fed, so the session call fails;
  - it declares `_supports_cache_class = False` and makes no Cache object, while transformers
    5 hands generate()'s states around as a `Cache` (`cache=`), which is what beam search
    reorders; ZayaStateCache is that object for all four kinds of state;
  - optimum-onnx pins transformers<4.58, and ZAYA's config and reference model need >=5.23, so
    the two cannot be installed together;
  - it opens its own InferenceSession; zaya-edge has one way to open an artifact (custom-op
    library registered when built, graph IO checked against the manifest).
The class follows optimum's pattern otherwise: a plain object with GenerationMixin, `config`,
`generation_config`, `device` and `forward`, accepted by pipelines as an optimum model is.

Torch-only cache-rollback modes are refused: assisted (speculative) decoding by transformers
itself (the model is stateful), cropping by the cache; attentions and hidden states are not
outputs of the graph.
"""

import importlib

# public name -> (module, attribute, whether the attribute builds the class on first use)
_EXPORTS = {
    "ZayaORTForCausalLM": ("model", "model_class", True),
    "ZayaStateCache": ("cache", "cache_class", True),
    "load_tokenizer": ("tokenizer", "load_tokenizer", False),
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    """The classes are made when first asked for, so `import zaya_edge.hf` needs no torch."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from .extra import extra

    extra("torch"), extra("transformers")
    module, attribute, builds = _EXPORTS[name]
    value = getattr(importlib.import_module(f".{module}", __name__), attribute)
    globals()[name] = value = value() if builds else value
    return value
