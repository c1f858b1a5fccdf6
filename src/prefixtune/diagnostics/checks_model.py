"""Doctor checks of an adapter against the model: fingerprint, layer count and width, position convention, and an
encoder adapter's own task head.

Each check takes (`RawAdapter`, `ModelFacts`) and returns a list of `Finding`s (empty: nothing wrong).
"""

from __future__ import annotations

from prefixtune.config import POSITION_CONVENTIONS
from prefixtune.core.fingerprint import compare
from prefixtune.diagnostics.findings import Finding
from prefixtune.diagnostics.model_facts import ModelFacts
from prefixtune.diagnostics.raw_adapter import RawAdapter
from prefixtune.parametrizations.task_head import mean_head_shapes
from prefixtune.version import __version__

ABSOLUTE_POSITION_FAMILIES = ("bert", "roberta")  # where "unshifted" applies (core.has_absolute_positions)
_RIGHT_MODEL = "use the base model the adapter was trained on, or train/convert the adapter for this model"


def check_fingerprint(adapter: RawAdapter, facts: ModelFacts) -> list[Finding]:
    """The recorded base-model fingerprint differs from the model's (architecture or weights)."""
    problems = compare(adapter.fingerprint, facts.fingerprint, include_head=adapter.head is None)
    if not problems:
        return []
    return [
        Finding(
            "fingerprint_mismatch",
            "the adapter was trained on another base model: " + "; ".join(problems),
            _RIGHT_MODEL,
        )
    ]


def check_layers(adapter: RawAdapter, facts: ModelFacts) -> list[Finding]:
    """The adapter covers another number of layers than the model has (methods with per-layer tensors)."""
    layers = adapter.layers()
    if layers is None:
        return []  # nothing per layer (a prompt, at the embeddings)
    have, want = len(layers), facts.geometry.num_layers
    if have == want:
        return []
    return [
        Finding(
            "layer_count_mismatch",
            f"the adapter has prefixes for {have} layers, but the model has {want} layers",
            _RIGHT_MODEL,
        )
    ]


def check_sites(adapter: RawAdapter, facts: ModelFacts) -> list[Finding]:
    """The adapter names encoder-decoder sites, but the model is decoder-only."""
    if adapter.sites is None or facts.geometry.sites:
        return []
    return [
        Finding(
            "sites_mismatch",
            f"the adapter covers the encoder-decoder sites {', '.join(adapter.sites)}, but "
            f"{type(facts.model).__name__} is decoder-only",
            "use the encoder-decoder (T5, BART) the adapter was trained on",
        )
    ]


def _seq2seq_convention(convention: str) -> Finding:
    return Finding(
        "position_convention",
        f"the adapter uses position convention {convention!r}, but on an encoder-decoder (T5, BART) real tokens "
        "keep their own positions ('unshifted')",
        "use an adapter trained on this encoder-decoder",
    )


def check_width(adapter: RawAdapter, facts: ModelFacts) -> list[Finding]:
    """The adapter's vectors do not have the model's width (hidden size, or key/value heads x head size)."""
    problem = adapter.method_class.width_problem(adapter.tensors, facts.geometry)
    return [] if problem is None else [Finding("width_mismatch", problem, _RIGHT_MODEL)]


def check_positions(adapter: RawAdapter, facts: ModelFacts) -> list[Finding]:
    """The position convention is unknown, or leaves the model no position for a real token."""
    convention, m = adapter.position_convention, adapter.num_virtual_tokens
    if convention not in POSITION_CONVENTIONS:
        return [
            Finding(
                "position_convention",
                f"the adapter uses position convention {convention!r}, which prefixtune {__version__} cannot "
                f"apply (it knows {', '.join(POSITION_CONVENTIONS)}); the model would number its tokens differently "
                "from training",
                "upgrade prefixtune to the version that wrote the adapter, or retrain it",
            )
        ]
    if facts.geometry.sites:  # an encoder-decoder: real tokens keep their positions, whatever the family
        return [] if convention == "unshifted" else [_seq2seq_convention(convention)]
    if convention == "unshifted" and facts.family not in ABSOLUTE_POSITION_FAMILIES:
        return [
            Finding(
                "position_convention",
                f"the adapter uses position convention 'unshifted' (real tokens keep 0..n-1), which needs an "
                f"encoder with learned absolute positions ({', '.join(ABSOLUTE_POSITION_FAMILIES)}); this model "
                f"is {facts.family}",
                "use the encoder the adapter was trained on, or retrain with position_convention='shifted'",
            )
        ]
    limit = facts.max_positions
    if limit is not None and m >= limit and convention == "shifted":  # "unshifted": real tokens start at 0
        return [
            Finding(
                "position_convention",
                f"with the {convention!r} convention real tokens start at position m={m}, but the model numbers "
                f"only {limit} positions: no real token fits",
                f"use an adapter with fewer than {limit} virtual tokens (m + prompt + output must stay <= {limit})",
            )
        ]
    return []


def check_head(adapter: RawAdapter, facts: ModelFacts) -> list[Finding]:
    """The adapter's own task head does not fit the model's head parameters (names and shapes)."""
    if adapter.head is None:
        return []
    params = {name: tuple(p.shape) for name, p in facts.model.named_parameters()}
    if adapter.head_pooling == "mean":  # its own linear head on mean-pooled states: (num_labels, d) and (num_labels,)
        config = facts.model.config
        is_classifier = type(facts.model).__name__.endswith("ForSequenceClassification")
        params = mean_head_shapes(int(config.hidden_size), int(config.num_labels)) if is_classifier else {}
    missing = sorted(n for n in adapter.head if n not in params)
    wrong = sorted(n for n in adapter.head if n in params and params[n] != tuple(adapter.head[n].shape))
    if not missing and not wrong:
        return []
    what = (
        f"missing from the model: {missing}"
        if missing
        else "of other shapes: " + ", ".join(f"{n} {tuple(adapter.head[n].shape)} vs {params[n]}" for n in wrong)
    )
    return [
        Finding(
            "head_mismatch",
            f"the adapter trains its own task head ({', '.join(sorted(adapter.head))}), whose weights are {what}",
            "load the model with the head class it was trained with (...ForSequenceClassification or "
            "...ForTokenClassification) and its number of labels",
        )
    ]
