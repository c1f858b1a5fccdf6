"""`ModelGeometry`: the shapes an adapter must match (a plain value; `core.hf.geometry` reads it off a model).

Depends on nothing: io/, diagnostics/ and the parametrizations pass it around without touching transformers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ModelGeometry:
    """Shapes of a base model as prefixtune sees them.

    Attributes:
        num_layers: L.
        hidden_size: d.
        kv_shapes: per layer, (H_kv, D) of the keys/values its attention consumes.
        sites: encoder-decoders: the site ("encoder", "decoder", "cross") of every slot, one per entry of
            `kv_shapes` (`num_layers` then counts slots); empty for a decoder-only model.
    """

    num_layers: int
    hidden_size: int
    kv_shapes: tuple[tuple[int, int], ...]
    sites: tuple[str, ...] = ()

    def select(self, sites: tuple[str, ...] | None) -> ModelGeometry:
        """The geometry of an adapter using only `sites` (None: all of them), slots kept in order."""
        if not self.sites or sites is None:
            return self
        keep = [i for i, site in enumerate(self.sites) if site in sites]
        return ModelGeometry(
            num_layers=len(keep),
            hidden_size=self.hidden_size,
            kv_shapes=tuple(self.kv_shapes[i] for i in keep),
            sites=tuple(self.sites[i] for i in keep),
        )
