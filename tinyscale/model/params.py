"""A model's parameters as a flat dict of sharded arrays, and back to the NNX module."""

from __future__ import annotations

import jax
from flax import nnx

from tinyscale import parallel
from tinyscale.model.spec import ModelSpec
from tinyscale.model.transformer import Transformer


class Params:
    """Build a sharded model and convert between it and a flat dict of arrays."""

    def __init__(self, spec: ModelSpec, mesh, seed: int, materialize: bool = True):
        """`materialize=False` skips the random init (`initial` then holds only shapes).

        The init is one compiled program, the seed's key its argument and each array's
        sharding its output sharding: one program serves every seed of a shape, where
        building the model op by op compiled ~30 small programs per shape."""
        self.spec = spec

        def build(key):
            return nnx.split(Transformer(spec, rngs=nnx.Rngs(key)))

        key = jax.random.key(seed)
        with parallel.using(mesh):
            self.graphdef, state = nnx.eval_shape(build, key)
            if materialize:
                state = jax.jit(lambda k: build(k)[1],
                                out_shardings=nnx.get_named_sharding(state, mesh))(key)
        flat = list(nnx.to_flat_state(state))
        self.paths = {"/".join(map(str, p)): (p, type(v)) for p, v in flat}
        self.initial = {"/".join(map(str, p)): v.get_value() for p, v in flat}

    def model(self, arrays: dict) -> Transformer:
        state = nnx.from_flat_state([(path, kind(arrays[key]))
                                     for key, (path, kind) in self.paths.items()])
        return nnx.merge(self.graphdef, state)
