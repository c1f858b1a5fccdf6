"""`RegistryConfig`: what the adapter registry admits and how much of it stays compiled.

One job: these fields and their defaults, once (the registry and both engines' compilers read them). Pure
Python, so the CLI builds its flags from it without importing the registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prefixtune.config_sections import flag_help


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    """Adapter admission and the compiled-prefix cache (the `prefixtune serve` flags of the same names).

    Attributes:
        adapter_cache_mb: memory budget of the LRU of compiled prefixes, in MiB (the vLLM engine: device
            memory for resident adapters per worker).
        allow_unverified_adapters: serve adapters that record no base-model fingerprint.
    """

    adapter_cache_mb: float = field(
        default=512.0, metadata=flag_help("Memory budget of the compiled-prefix LRU cache, in MiB.")
    )
    allow_unverified_adapters: bool = field(
        default=False,
        metadata=flag_help(
            "Serve adapters that record no base_model_fingerprint (PEFT directories, hand-made files); off: "
            "refused, since nothing proves they were made for this base model."
        ),
    )

    @property
    def cache_bytes(self) -> int:
        """The cache budget in bytes."""
        return int(self.adapter_cache_mb * 2**20)

    def problems(self) -> list[str]:
        if self.adapter_cache_mb <= 0:
            return [f"adapter_cache_mb={self.adapter_cache_mb} must be > 0"]
        return []
