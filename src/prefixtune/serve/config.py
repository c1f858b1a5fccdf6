"""`ServeConfig`: everything `prefixtune serve` is configured with, as the composition of its parts' configs.

Each part owns its fields and defaults, next to its code: `EngineLimits` (batching, context; both engines),
`RegistryConfig` (adapter admission, compiled-prefix cache), `ApiSettings` (what the routes enforce),
`HttpConfig` (uvicorn), `VllmSettings` (`--engine vllm`). `ServeConfig` holds them plus what says what to
serve. Flags, config-file keys and `from_flat` / `replace` keywords stay flat, one per leaf field
(`max_num_seqs`, `vllm_dtype`: see `prefixtune.config_sections`). `problems()` lists every invalid field at
once. Pure Python: the CLI's `--help` imports this without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefixtune.config_sections import flag_help, from_flat, replace_flat, section, to_flat
from prefixtune.errors import ConfigError
from prefixtune.serve.api.settings import ApiSettings, HttpConfig
from prefixtune.serve.engine.limits import EngineLimits
from prefixtune.serve.registry_config import RegistryConfig
from prefixtune.vllm.engine_config import VllmSettings

ENGINES = ("prefixtune", "vllm")


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """Configuration of the server (see `prefixtune serve --help`; build it flat with `from_flat`)."""

    model: str = field(default="smollm2-135m", metadata=flag_help("Base model: a built-in name, an HF dir or .gguf."))
    adapters: str | None = field(
        default=None, metadata=flag_help("Adapter root: one subdirectory per adapter, all loaded at start.")
    )
    served_model_name: str | None = field(
        default=None, metadata=flag_help("The base model's name in the API (default: --model).")
    )
    adapter_keys: str | None = field(
        default=None, metadata=flag_help('JSON file {"adapter": ["key", ...]}: per-tenant keys for adapters.')
    )
    engine: str = field(
        default="prefixtune",
        metadata=flag_help(
            "Engine: 'prefixtune' (built in: one process, CPU or one GPU) or 'vllm' (vLLM with the prefixtune KV "
            "connector: paged cache, prefix caching, tensor/data parallelism; `make setup-vllm`)."
        ),
    )
    http: HttpConfig = field(default_factory=HttpConfig, metadata=section(HttpConfig))
    api: ApiSettings = field(default_factory=ApiSettings, metadata=section(ApiSettings))
    registry: RegistryConfig = field(default_factory=RegistryConfig, metadata=section(RegistryConfig))
    limits: EngineLimits = field(default_factory=EngineLimits, metadata=section(EngineLimits))
    vllm: VllmSettings = field(default_factory=VllmSettings, metadata=section(VllmSettings, flag_prefix="vllm_"))

    @classmethod
    def from_flat(cls, **values: Any) -> ServeConfig:
        """A config from flat names (`ServeConfig.from_flat(model="m", max_num_seqs=4, vllm_dtype="float32")`).

        Raises:
            TypeError: a name that is not a field.
        """
        return from_flat(cls, values)

    def replace(self, **changes: Any) -> ServeConfig:
        """A copy with fields changed by flat name (or whole parts by their field name: `api=...`)."""
        return replace_flat(self, changes)

    def to_flat(self) -> dict[str, Any]:
        """Every field by flat name (the keys a config file may hold)."""
        return to_flat(self)

    def problems(self) -> list[str]:
        """Every invalid field, by flat name."""
        out = [] if self.engine in ENGINES else [f"engine={self.engine!r} must be one of {', '.join(ENGINES)}"]
        for part in (self.http, self.api, self.registry, self.limits, self.vllm):
            out += part.problems()
        return out

    def validate(self) -> ServeConfig:
        """Return self, or raise ConfigError listing every problem."""
        problems = self.problems()
        if problems:
            raise ConfigError(problems, source="serve")
        return self
