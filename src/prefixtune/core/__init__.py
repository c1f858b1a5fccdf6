"""The core: the compiled artifact (`PrefixKV`), the one injection mechanism, and the reference path.

Knows nothing of training, files or HTTP. All transformers-specific code lives in `core/hf/`.
"""
