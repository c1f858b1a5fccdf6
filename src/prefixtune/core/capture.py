"""Running the frozen model to read what each layer's attention stores.

Compilation and initialization both need "the keys and values layer l computes from these inputs". Rather
than re-implement every architecture's norms, projections, q/k norms and rotary embedding, we run the model's
own modules and record the keys/values its attention function receives (DESIGN.md §2, issue 2 item 3). A
forward pre-hook, present only while such a capture runs, can replace each layer's input with its own prefix
P^l (method "prefix"); the run stops right after the last layer's keys/values are recorded.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import nn

from prefixtune.core.hf import checkpointing
from prefixtune.core.hf.attention import install
from prefixtune.core.hf.layers import decoder_layers, num_layers
from prefixtune.core.hf.seq2seq import input_layers, is_encoder_decoder, slot_sites
from prefixtune.errors import UnsupportedModelError


class _CaptureComplete(Exception):
    """Raised by the last layer's attention to end a capture run early (internal control flow)."""


class _LayerComplete(Exception):
    """Raised by a layer's attention once its keys/values are recorded, when the rest of the layer is not needed."""


class KVCapture:
    """Collects one (key, value) pair per layer during a capture run.

    Args:
        num_layers: L.
        layer_only: the layers' outputs are not needed (every layer's input is replaced, method "prefix"), so
            each layer stops right after its attention's keys/values are recorded: the attention product, output
            projection and MLP over the prefix positions are skipped.
    """

    def __init__(self, num_layers: int, layer_only: bool = False) -> None:
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.layer_only = layer_only

    def record(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> None:
        self.keys[layer], self.values[layer] = key, value
        if layer == len(self.keys) - 1:
            raise _CaptureComplete
        if self.layer_only:
            raise _LayerComplete


# The per-layer inputs of the capture run in progress, if any. A ContextVar (per thread, per asyncio task): the
# model may be shared with a serving engine running forwards on another thread while a capture has its hooks
# in place, and those forwards must never see a capture's replacement.
_LAYER_INPUTS: ContextVar[torch.Tensor | None] = ContextVar("prefixtune_layer_inputs", default=None)

# Hooks exist only while a capture that replaces layer inputs runs: model -> (captures running, hook handles).
_HOOKS: weakref.WeakKeyDictionary[nn.Module, tuple[int, list]] = weakref.WeakKeyDictionary()
_HOOKS_LOCK = threading.Lock()
_NO_FORWARD = object()


def _swap_input(idx: int):
    def hook(module, args, kwargs):
        inputs = _LAYER_INPUTS.get()
        if inputs is None:
            return None  # a forward of another thread while this capture runs: untouched
        new = inputs[:, idx]
        if args:
            return (new.to(args[0].dtype), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": new.to(kwargs["hidden_states"].dtype)}

    return hook


def _add_layer_input_hooks(model: nn.Module) -> None:
    """A pre-hook on every decoder layer that swaps in `_LAYER_INPUTS[:, l]` when set, and a forward that ends
    the layer early on `_LayerComplete` (its output is replaced anyway). Counted: nested or concurrent
    captures share one set, removed by the last `_remove_layer_input_hooks`."""
    with _HOOKS_LOCK:
        count, undo = _HOOKS.get(model, (0, []))
        if count == 0:
            for i, layer in enumerate(_input_layers(model)):
                handle = layer.register_forward_pre_hook(_swap_input(i), with_kwargs=True)
                own = layer.__dict__.get("forward", _NO_FORWARD)  # a wrapper already in place, if any
                layer.forward = functools.partial(_forward_ending_early, layer.forward)
                undo.append((layer, handle, own))
        _HOOKS[model] = (count + 1, undo)


def _remove_layer_input_hooks(model: nn.Module) -> None:
    with _HOOKS_LOCK:
        count, undo = _HOOKS[model]
        if count > 1:
            _HOOKS[model] = (count - 1, undo)
            return
        for layer, handle, own in undo:
            handle.remove()
            if own is _NO_FORWARD:
                del layer.forward  # the class's forward again
            else:
                layer.forward = own
        del _HOOKS[model]


def _forward_ending_early(forward, *args, **kwargs):
    """A decoder layer's `forward` that a capture may end once the layer's keys/values are recorded."""
    try:
        return forward(*args, **kwargs)
    except _LayerComplete:
        # The next layer's pre-hook replaces this output; returning the input keeps the model's loop going.
        return args[0] if args else kwargs["hidden_states"]


@contextmanager
def _replace_layer_inputs(model: nn.Module, layer_inputs: torch.Tensor) -> Iterator[None]:
    """Make decoder layer l see `layer_inputs[:, l]` as its input hidden states. layer_inputs: (B, L, m, d)."""
    _add_layer_input_hooks(model)
    token = _LAYER_INPUTS.set(layer_inputs)
    try:
        yield
    finally:
        _LAYER_INPUTS.reset(token)
        _remove_layer_input_hooks(model)


def capture_kv(
    model: nn.Module,
    *,
    inputs_embeds: torch.Tensor | None = None,
    input_ids: torch.Tensor | None = None,
    layer_inputs: torch.Tensor | None = None,
) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """Keys and values every layer's attention computes, at positions 0..T-1.

    Args:
        model: a transformers causal LM (frozen; gradients still flow to the inputs).
        inputs_embeds: (B, T, d) input embeddings, or
        input_ids: (B, T) token ids.
        layer_inputs: optional (B, L, T, d): replaces each layer's input hidden states (method "prefix").

    Returns:
        (keys, values): per layer, (B, H_kv, T, D).
    """
    if (inputs_embeds is None) == (input_ids is None):
        raise ValueError("capture_kv needs exactly one of inputs_embeds and input_ids")
    T = (inputs_embeds if inputs_embeds is not None else input_ids).shape[1]
    if layer_inputs is not None and layer_inputs.shape[2] != T:
        raise ValueError(f"layer_inputs cover {layer_inputs.shape[2]} positions, the inputs {T}")
    install(model)
    device = model.get_input_embeddings().weight.device
    kwargs = {"input_ids": input_ids} if inputs_embeds is None else {"inputs_embeds": inputs_embeds}
    if is_encoder_decoder(model):
        # Every slot (encoder, decoder, cross): the same inputs feed the encoder and the decoder, positions are
        # the model's own (0..T-1). Whole layers run: T5's layers must return their position bias.
        L = len(slot_sites(model))
        capture = KVCapture(L)
        kwargs.update({f"decoder_{name}": value for name, value in kwargs.items()})
        position_ids = None
    else:
        L = num_layers(model)
        capture = KVCapture(L, layer_only=layer_inputs is not None)
        position_ids = torch.arange(T, device=device)[None]
    if position_ids is not None:
        kwargs["position_ids"] = position_ids
    try:
        with checkpointing.suspended(model):
            if layer_inputs is not None:
                with _replace_layer_inputs(model, layer_inputs):
                    model(**kwargs, use_cache=False, kv_capture=capture)
            else:
                model(**kwargs, use_cache=False, kv_capture=capture)
    except _CaptureComplete:
        pass
    if any(k is None for k in capture.keys):
        # The model's attention never reached ours: it computes attention itself (DeBERTa's disentangled
        # attention, for one) instead of through transformers' AttentionInterface.
        raise UnsupportedModelError(
            f"{type(model).__name__}: {sum(k is None for k in capture.keys)} of {L} layers' attention does not go "
            "through transformers' AttentionInterface, so no prefix can reach it; prefixtune supports decoder-only "
            "causal LMs, the encoders bert, roberta and modernbert, and the encoder-decoders T5 and BART"
        )
    return tuple(capture.keys), tuple(capture.values)  # type: ignore[arg-type]


def _input_layers(model: nn.Module) -> list[nn.Module]:
    """The layers a hidden-state prefix enters: the decoder's, or an encoder-decoder's encoder then decoder layers."""
    return input_layers(model) if is_encoder_decoder(model) else list(decoder_layers(model))


def layer_input_states(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """The hidden states each layer of `_input_layers` receives for `input_ids` (B, T): (B, L, T, d).

    An encoder-decoder gets `input_ids` as both its encoder and its decoder input.
    """
    if is_encoder_decoder(model):
        out = model(input_ids=input_ids, decoder_input_ids=input_ids, output_hidden_states=True, use_cache=False)
        L_enc, L_dec = len(out.encoder_hidden_states) - 1, len(out.decoder_hidden_states) - 1
        return torch.stack([*out.encoder_hidden_states[:L_enc], *out.decoder_hidden_states[:L_dec]], dim=1)
    L = num_layers(model)
    out = model(input_ids=input_ids, output_hidden_states=True, use_cache=False)
    # hidden_states[l] is the input of layer l for l < L (transformers convention)
    return torch.stack(out.hidden_states[:L], dim=1)
