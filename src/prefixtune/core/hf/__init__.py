"""All transformers glue: finding layers, registering the attention function, model geometry.

No other module of prefixtune touches transformers internals or compares its versions.
"""
