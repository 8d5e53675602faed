"""The device mesh, the logical-axis rules, multi-host start-up and global batches.

Mesh axes are ('data', 'fsdp', 'tensor'): batches split over data x fsdp, parameters
over fsdp (their `embed` dimension) and tensor (heads, kv, MLP, vocabulary).
"""

from __future__ import annotations

import contextlib
import math
import os

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from tinyscale.errors import TinyscaleError

AXES = ("data", "fsdp", "tensor")
RULES = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv", "tensor"),
    ("mlp", "tensor"),
)


def initialize_distributed(coordinator: str = "", num_processes: int = 0,
                           process_id: int = -1) -> None:
    """Join a multi-process job: explicit coordinator, or SLURM / Cloud TPU auto-detect.

    A single process on one machine needs nothing and does nothing here.
    """
    if jax.distributed.is_initialized():
        return
    if coordinator:
        jax.distributed.initialize(coordinator, num_processes=num_processes,
                                   process_id=process_id)
    elif int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_STEP_NODELIST" in os.environ:
        jax.distributed.initialize()  # inside `srun`: JAX reads the SLURM environment
    elif "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""):
        jax.distributed.initialize()  # a multi-worker Cloud TPU VM slice


def mesh_shape(mesh_config, n_devices: int) -> tuple[int, int, int]:
    """Resolve a -1 axis and check the mesh uses exactly the devices there are."""
    sizes = [mesh_config[a] for a in AXES]
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if n_devices % known:
            raise TinyscaleError(
                f"config.mesh {dict(zip(AXES, sizes))} cannot fill {n_devices} devices: the "
                f"fixed axes ({known}) must divide the device count.")
        sizes[sizes.index(-1)] = n_devices // known
    if math.prod(sizes) != n_devices:
        raise TinyscaleError(
            f"config.mesh {dict(zip(AXES, sizes))} needs {math.prod(sizes)} devices but "
            f"there are {n_devices}: make the product of the axes {n_devices}, or set one "
            "axis to -1.")
    return tuple(sizes)


def make_mesh(config, devices=None) -> jax.sharding.Mesh:
    """The mesh of config.mesh, validated against the model and batch shapes."""
    devices = jax.devices() if devices is None else devices
    data, fsdp, tensor = mesh_shape(config.mesh, len(devices))
    m = config.model
    for knob, value in (("model.n_heads", m.n_heads),
                        ("model.n_kv_heads", m.n_kv_heads or m.n_heads)):
        if value % tensor:
            raise TinyscaleError(
                f"config.{knob}={value} is not divisible by the tensor axis ({tensor}): "
                "change the heads or config.mesh.tensor.")
    if config.train.batch_size % (data * fsdp * config.train.grad_accum):
        raise TinyscaleError(
            f"config.train.batch_size={config.train.batch_size} does not split over the "
            f"data axes ({data} x {fsdp}) and {config.train.grad_accum} accumulation steps: "
            f"use a multiple of {data * fsdp * config.train.grad_accum}.")
    return jax.make_mesh((data, fsdp, tensor), AXES, axis_types=(AxisType.Auto,) * 3,
                         devices=devices)


@contextlib.contextmanager
def using(mesh: jax.sharding.Mesh):
    """Mesh and logical-axis rules in force: models built inside are born sharded."""
    with jax.set_mesh(mesh), nnx.logical_axis_rules(RULES):
        yield


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(("data", "fsdp"), None))


def global_batch(local_rows: np.ndarray, mesh: jax.sharding.Mesh) -> jax.Array:
    """This process's rows -> one global array sharded over the batch axes."""
    return jax.make_array_from_process_local_data(batch_sharding(mesh), local_rows)
