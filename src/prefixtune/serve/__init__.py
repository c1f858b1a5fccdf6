"""`prefixtune serve`: one frozen base model, many prefix adapters, mixed in every batch (issue 4).

Layout (STYLE.md "Serving"): `engine/` (pure-Python scheduler, torch runner and KV store, the async engine),
`registry` (adapter directory, LRU of compiled prefixes), `api/` (FastAPI, never imports torch), `metrics`.
Importing this package imports nothing heavy; import the submodule you need.
"""
