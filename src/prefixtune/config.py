"""`PrefixConfig`: what an adapter is (method, size, initialization, reparametrization, positions).

Read by every layer of the package; depends only on `errors` and the method registry (asked for names, and for
the chosen method's own rules, never branched on by name here). Field help strings are reused by the CLI, so
a flag and a field are one thing.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from prefixtune.errors import ConfigError

Method = Literal["prefix", "kv", "prompt"]  # the built-in methods; others may be registered
METHODS: tuple[str, ...] = ("prefix", "kv", "prompt")  # the built-in methods (`registered_methods()`: all)
# "auto" and "task" are resolved before an adapter is built (`model_checks.config_for_model`, `train.task_init`).
INITS: tuple[str, ...] = ("auto", "task", "text", "vocab", "random")
POSITION_CONVENTIONS: tuple[str, ...] = ("shifted", "unshifted")
# How an adapter's own head (`train_head`) reads the encoder: "model", a copy of the model's own head (BERT's
# pooler on [CLS] + classifier); "mean", a fresh Linear(d, num_labels) on the mean of the real tokens' states.
HEAD_POOLINGS: tuple[str, ...] = ("model", "mean")
# Encoder-decoders (T5, BART): the attention sites an adapter may give a prefix (issue 12, `core.hf.seq2seq`).
SITES: tuple[str, ...] = ("encoder", "decoder", "cross")
# The one adapter-name rule (PrefixModel, the serving registry, its adapter directories): safe as a path
# component and in a URL. Matched with fullmatch, so "a\n" is refused ("$" would match before a newline).
ADAPTER_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
ADAPTER_NAME_RULE = "use 1-128 letters, digits, '_', '-' or '.', starting with a letter or digit, without '..'"


def is_valid_adapter_name(name: object) -> bool:
    """Whether `name` follows the adapter-name rule (`ADAPTER_NAME_RULE`)."""
    return isinstance(name, str) and ADAPTER_NAME_PATTERN.fullmatch(name) is not None and ".." not in name


@dataclass(frozen=True, slots=True)
class PrefixConfig:
    """Configuration of one adapter.

    Every method compiles to the same artifact, a per-layer key/value prefix (`PrefixKV`); see DESIGN.md §1.
    """

    method: str = field(
        default="kv",
        metadata={
            "help": "kv (default): per-layer keys/values trained directly (PEFT PrefixTuningConfig form, "
            "P-tuning v2; the best of the three in bench/RESULTS-quality-suite.md); "
            "prefix: trainable hidden-state prefix P^l per layer (the literal method, DESIGN.md §1); "
            "prompt: soft prompt prepended once to the token embeddings (prompt tuning)."
        },
    )
    num_virtual_tokens: int = field(
        default=16, metadata={"help": "m, the number of prefix vectors per layer (per adapter)."}
    )
    init: str = field(
        default="auto",
        metadata={
            "help": "auto (default): task when training starts the adapter of a decoder-only model "
            "(`prefixtune train`, run_training), else vocab. task: text init from the training data, the "
            "shortest example of each label with its label word (other tasks: the four shortest examples); "
            "it scored 5 validation points above vocab for kv on debates-2016 (bench/RESULTS-quality-levers.md). "
            "text: the activations of `init_text` (the recipe reported best for modern LLMs). vocab: the "
            "activations of random vocabulary tokens run through the frozen model. random: normal noise at "
            "the model's scale (kv: per-layer key/value std; prefix, prompt: embedding std), which trains much "
            "worse on pretrained models (issue 3's SmolLM2 runs stayed near chance)."
        },
    )
    init_text: str | None = field(
        default=None, metadata={"help": "Text whose activations initialize the prefix (init='text')."}
    )
    reparam_hidden: int | None = field(
        default=None,
        metadata={
            "help": "Hidden width of the reparametrization MLP (Li & Liang 2021, §4.3); used during "
            "training only and folded away on save. None: train the prefix directly."
        },
    )
    position_convention: str = field(
        default="shifted",
        metadata={
            "help": "shifted: [P^l ; H] is numbered 0..m+n-1, so prefix i has position i and real token j "
            "has position m+j (as PEFT and the original code). unshifted: real token j keeps position j, as "
            "without an adapter, and the per-layer prefixes carry no position (encoders with learned absolute "
            "positions, BERT and RoBERTa, methods prefix and kv; keeps every position of a 512-position model "
            "for real tokens)."
        },
    )
    train_head: bool = field(
        default=False,
        metadata={
            "help": "Also train the model's task head (the classifier of an encoder's ...ForSequenceClassification "
            "or ...ForTokenClassification: every weight outside its bare encoder), as P-tuning v2 does. The "
            "adapter then owns a copy of the head, saved in its directory (head.safetensors), so adapters with "
            "different heads mix in one batch. False: the prefix alone trains and the model's head stays frozen."
        },
    )
    head_pooling: str = field(
        default="model",
        metadata={
            "help": "With train_head, what the adapter's own head reads. model (default): a copy of the model's "
            "own head (BERT: the pooler on [CLS], then the classifier). mean: a fresh Linear(hidden, num_labels) "
            "on the attention-mask-weighted mean of the last hidden states of the real tokens (never prefix or "
            "prompt positions), replacing the model's pooler and classifier for this adapter; suits encoders "
            "trained for mean pooling (sentence-transformers, e.g. all-MiniLM-L6-v2). Sequence classification only."
        },
    )
    seed: int | None = field(default=None, metadata={"help": "Seed for the initialization (None: torch's RNG)."})
    sites: tuple[str, ...] | None = field(
        default=None,
        metadata={
            "help": "Encoder-decoders (T5, BART) only: which attention sites get a prefix, any of encoder "
            "(encoder self-attention), decoder (decoder self-attention), cross (cross-attention keys/values "
            "prepended to the encoder outputs'); None: all three. Decoder-only models take None."
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.sites, list | str):  # from JSON or a `key=value` flag
            sites = (self.sites,) if isinstance(self.sites, str) else self.sites
            object.__setattr__(self, "sites", tuple(s.strip() for part in sites for s in part.split(",") if s))
        problems = self.problems()
        if problems:
            raise ConfigError(problems, source="PrefixConfig")

    def problems(self) -> list[str]:
        """Every problem with this configuration (empty when valid)."""
        from prefixtune.parametrizations.registry import is_registered, parametrization_class, registered_methods

        out: list[str] = []
        if not is_registered(self.method):
            out.append(f"method={self.method!r} is unknown; choose one of {', '.join(registered_methods())}")
        if not isinstance(self.num_virtual_tokens, int) or self.num_virtual_tokens < 1:
            out.append(f"num_virtual_tokens={self.num_virtual_tokens!r} must be an integer >= 1")
        if self.init not in INITS:
            out.append(f"init={self.init!r} is unknown; choose one of {', '.join(INITS)}")
        if self.init == "text" and not self.init_text:
            out.append("init='text' needs init_text='...' (the text whose activations start the prefix)")
        if self.init_text and self.init != "text":
            out.append(f"init_text is given but init={self.init!r}; set init='text' to use it")
        if self.reparam_hidden is not None and (not isinstance(self.reparam_hidden, int) or self.reparam_hidden < 1):
            out.append(f"reparam_hidden={self.reparam_hidden!r} must be a positive integer or None")
        if is_registered(self.method):
            out += parametrization_class(self.method).config_problems(self)
        out += _head_problems(self.train_head, self.head_pooling)
        if self.position_convention not in POSITION_CONVENTIONS:
            out.append(
                f"position_convention={self.position_convention!r} is unknown; "
                f"choose one of {', '.join(POSITION_CONVENTIONS)}"
            )
        out += _site_problems(self.sites)
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (`sites` only when set, `head_pooling` only when not "model", so
        other adapter files stay as they were)."""
        out = dataclasses.asdict(self)
        if self.head_pooling == "model":
            del out["head_pooling"]
        if self.sites is None:
            del out["sites"]
        else:
            out["sites"] = list(self.sites)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrefixConfig:
        """Build from a dict, naming unknown keys instead of failing on them one at a time."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown PrefixConfig keys {unknown}; known keys are {sorted(names)}")
        return cls(**data)

    def replace(self, **changes: Any) -> PrefixConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _head_problems(train_head: object, head_pooling: object) -> list[str]:
    """What is wrong with the choice of an adapter's own head (`train_head`, `head_pooling`)."""
    out = []
    if not isinstance(train_head, bool):
        out.append(f"train_head={train_head!r} must be true or false")
    if head_pooling not in HEAD_POOLINGS:
        out.append(f"head_pooling={head_pooling!r} is unknown; choose one of {', '.join(HEAD_POOLINGS)}")
    elif head_pooling != "model" and not train_head:
        out.append(
            f"head_pooling={head_pooling!r} is a head the adapter trains: set train_head=True "
            "(or leave head_pooling='model')"
        )
    return out


def _site_problems(sites: tuple[str, ...] | None) -> list[str]:
    """What is wrong with a choice of encoder-decoder sites (none when None: every site, or a decoder-only model)."""
    if sites is None:
        return []
    problems = [f"site {s!r} is unknown; choose among {', '.join(SITES)}" for s in sites if s not in SITES]
    if not sites:
        problems.append(f"sites must name at least one of {', '.join(SITES)} (or be None for all three)")
    if len(set(sites)) != len(sites):
        problems.append(f"sites {list(sites)} name a site twice")
    return problems
