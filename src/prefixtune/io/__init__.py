"""Adapter files: prefixtune's own directory format, and (later) Hugging Face PEFT import/export."""
