"""Hugging Face PEFT's names for the prompt-learning types prefixtune maps its methods to (peft 0.17-0.21).

Plain strings, importable without torch (the CLI's `--help` lists them). Which method maps to which type is
each method's own answer (`Parametrization.peft_export_types`, `peft_import_type`).
"""

PREFIX_TUNING = "PREFIX_TUNING"
PROMPT_TUNING = "PROMPT_TUNING"
SUPPORTED_TYPES: tuple[str, ...] = (PREFIX_TUNING, PROMPT_TUNING)
# The only position convention PEFT can express, stated once: prefix keys used as stored, real tokens at m + j.
PEFT_POSITION_CONVENTION = "shifted"
