"""Generation with prefixes: transformers' `generate` driven through the one injection mechanism."""
