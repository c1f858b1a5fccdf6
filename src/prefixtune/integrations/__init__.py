"""Integrations with training frameworks people already use (Hugging Face `Trainer`, TRL).

Each module imports its framework itself; importing this package imports none of them.
"""
