"""prefixtune adapters on vLLM (optional extra `vllm`; nothing else in prefixtune imports this package, except
`serve.config` reading the vllm-free `engine_config.VllmSettings`, a part of `ServeConfig`).

How it works (DESIGN.md §2, "Engines"): a request for adapter A with prompt ids x is sent to vLLM as
`[placeholder] * m_A + x`. The KV connector (`connector.PrefixKVConnector`) tells vLLM's scheduler that the
first m_A positions are already available, and writes A's compiled keys/values (a KV pack, docs/kv-pack.md)
into the paged-cache slots of those positions before the forward pass. vLLM numbers the real tokens
m..m+n-1, the `shifted` convention, so the compiled (already rotated) keys fit as they are.

Modules:
- `addressing`: how a request names its adapter (placeholders, cache salt, kv_transfer_params); no vllm.
- `device_store`: the worker-side LRU of adapters' keys/values on the device, read from KV packs.
- `connector`: the `KVConnectorBase_V1` implementation (scheduler and worker sides).
- `compiler`: adapter directories -> content-addressed KV packs, for the server's registry.
- `engine`: `VllmEngine`, the server's `Engine` protocol on vLLM's `AsyncLLM`.
"""
