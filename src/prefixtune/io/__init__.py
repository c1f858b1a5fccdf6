"""Adapter files: prefixtune's own directory format (`adapter_dir`), Hugging Face PEFT import and export
(`peft_format`, `peft_import`, `peft_export`) and the KV pack of compiled keys/values (`kv_pack`)."""
