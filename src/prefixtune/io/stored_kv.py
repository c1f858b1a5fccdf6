"""An adapter's compiled keys/values from its files alone, for the commands that then need no base model.

One job: when an adapter directory can be compiled without its base model (it was saved pre-compiled, or its
method's `compiles_without_model`: `kv`), build the `PrefixKV` from the files and the geometry they record,
checking the tensors against that geometry. Otherwise say so (None) and the caller loads the model.
Depends on core's value types, the method registry and `io.adapter_dir`.
"""

from __future__ import annotations

from prefixtune.core.geometry import ModelGeometry
from prefixtune.core.prefix_kv import PrefixKV
from prefixtune.io.adapter_dir import AdapterFiles, check_shapes
from prefixtune.parametrizations import parametrization_class


def recorded_geometry(files: AdapterFiles) -> ModelGeometry | None:
    """The base model's geometry as the adapter's config records it (prefixtune's format), or None."""
    raw = files.raw_config
    shapes, layers, width = raw.get("kv_shapes"), raw.get("num_layers"), raw.get("hidden_size")
    if not (isinstance(shapes, list) and isinstance(layers, int) and isinstance(width, int)):
        return None
    if len(shapes) != layers or not all(isinstance(s, list) and len(s) == 2 for s in shapes):
        return None
    return ModelGeometry(num_layers=layers, hidden_size=width, kv_shapes=tuple((int(h), int(d)) for h, d in shapes))


def compile_without_model(files: AdapterFiles) -> PrefixKV | None:
    """The adapter's `PrefixKV` without its base model, or None when compiling it needs the model.

    Raises:
        AdapterFormatError: the tensors do not fit the geometry the adapter records.
    """
    if files.compiled is not None:
        return files.compiled
    cls = parametrization_class(files.config.method)
    geometry = recorded_geometry(files)
    if not cls.compiles_without_model or geometry is None:
        return None
    check_shapes(files, cls.expected_shapes(files.config, geometry))
    adapter = cls.from_folded(files.config, geometry, files.tensors)
    return adapter.compile(None, files.fingerprint).detach()  # type: ignore[arg-type]  # needs no model
