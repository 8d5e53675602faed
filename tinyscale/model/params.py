"""A model's parameters as a flat dict of sharded arrays, and back to the NNX module."""

from __future__ import annotations

import functools

import jax
from flax import nnx

from tinyscale import parallel
from tinyscale.model.spec import ModelSpec
from tinyscale.model.transformer import Transformer


class Params:
    """Build a sharded model and convert between it and a flat dict of arrays."""

    def __init__(self, spec: ModelSpec, mesh, seed: int, materialize: bool = True):
        """`materialize=False` skips the random init (`initial` then holds only shapes).

        The init is one compiled program (_init_program), the seed's key its argument and
        each array's declared sharding constrained inside it: one program serves every
        seed of a shape, where building the model op by op compiled ~30 small programs.
        `structure` (and `model`, its method) is one object per shape and mesh in a
        process, whatever the seed: programs built over it are traced once per process."""
        self.spec = spec
        self.structure, init = _init_program(spec, mesh)
        self.model = self.structure.model
        if materialize:
            with parallel.using(mesh):
                state = init(jax.random.key(seed))
            self.initial = {"/".join(map(str, p)): v.get_value()
                            for p, v in nnx.to_flat_state(state)}
        else:
            self.initial = dict(self.structure.shapes)


class Structure:
    """A shape's NNX graph definition and flat array paths on a mesh, without values:
    `model(arrays)` rebuilds the module from a flat dict. One per (spec, mesh) in a
    process (_init_program), so a program keyed on it -- a train or eval step
    (steps.py), a sampler given `model` -- is traced and compiled once for every run of
    the shape the process trains or evaluates."""

    def __init__(self, graphdef, state):
        self.graphdef = graphdef
        flat = list(nnx.to_flat_state(state))
        self.paths = {"/".join(map(str, p)): (p, type(v)) for p, v in flat}
        self.shapes = {"/".join(map(str, p)): v.get_value() for p, v in flat}

    def model(self, arrays: dict) -> Transformer:
        state = nnx.from_flat_state([(path, kind(arrays[key]))
                                     for key, (path, kind) in self.paths.items()])
        return nnx.merge(self.graphdef, state)


class _Draws:
    """The keys `nnx.Rngs(key)` hands the layers it builds -- its `params` stream's n-th
    draw is `fold_in(key, n)` -- with the count a Python int. nnx.Rngs keeps its count in
    a Variable, and each traced update reads the tracer's `sharding`, which JAX answers
    with an error whose message walks the whole program so far: tracing an init costs the
    square of its number of arrays (a 48-layer model's init traced in 2.15 s, 0.33 s
    without, docs/results.md). The same keys, so the same initial values."""

    def __init__(self, key):
        self.key, self.drawn = key, 0

    def params(self):
        self.drawn += 1
        return jax.random.fold_in(self.key, self.drawn - 1)


@functools.lru_cache(maxsize=32)
def _init_program(spec: ModelSpec, mesh):
    """(Structure, jitted init taking the seed's key) of a shape on a mesh, made once per
    process: each Params of the shape reuses the traced program. The model is traced
    once, by the shapes' evaluation (the call reuses that trace); each array's sharding
    is constrained to its declared one inside the program."""
    made = {}

    def init(key):
        made["graphdef"], state = nnx.split(Transformer(spec, rngs=_Draws(key)))
        return jax.lax.with_sharding_constraint(state, nnx.get_named_sharding(state, mesh))

    # on CPU, compiled for a fast compile: the program runs once. LLVM unoptimised (its
    # per-array random number generators took half the compile time at the default
    # level) and XLA's older kernel emitters (which set up less per kernel); the values
    # are the same bits (docs/results.md, "Programs once per process; one-off programs on
    # the older emitters")
    jitted = jax.jit(init, compiler_options=parallel.compile_options(
        True, mesh.devices.flat[0].platform))
    with parallel.using(mesh):  # the logical axes' rules: the shardings are read there
        state = jax.eval_shape(jitted, jax.random.key(0))
    return Structure(made["graphdef"], state), jitted
