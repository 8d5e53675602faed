"""A model's parameters as a flat dict of sharded arrays, and back to the NNX module."""

from __future__ import annotations

from flax import nnx

from tinyscale import parallel
from tinyscale.model.spec import ModelSpec
from tinyscale.model.transformer import Transformer


class Params:
    """Build a sharded model and convert between it and a flat dict of arrays."""

    def __init__(self, spec: ModelSpec, mesh, seed: int, materialize: bool = True):
        """`materialize=False` skips the random init (`initial` then holds only shapes)."""
        self.spec = spec
        with parallel.using(mesh):
            if materialize:
                model = Transformer(spec, rngs=nnx.Rngs(seed))
            else:
                model = nnx.eval_shape(lambda: Transformer(spec, rngs=nnx.Rngs(seed)))
        self.graphdef, state = nnx.split(model)
        flat = list(nnx.to_flat_state(state))
        self.paths = {"/".join(map(str, p)): (p, type(v)) for p, v in flat}
        self.initial = {"/".join(map(str, p)): v.get_value() for p, v in flat}

    def model(self, arrays: dict) -> Transformer:
        state = nnx.from_flat_state([(path, kind(arrays[key]))
                                     for key, (path, kind) in self.paths.items()])
        return nnx.merge(self.graphdef, state)
