"""The device mesh, the logical-axis rules, multi-host start-up and global batches.

Mesh axes are ('data', 'fsdp', 'tensor'): batches split over data x fsdp, parameters
over fsdp (their `embed` dimension; a mixture's experts) and tensor (heads, kv, MLP,
vocabulary).
"""

from __future__ import annotations

import contextlib
import math
import os
import re

import jax
import numpy as np
from flax import nnx
from jax._src import distributed
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
    ("expert", "fsdp"),
)
# XLA:CPU compiler options for programs that run a few times: LLVM unoptimised and XLA's
# older kernel emitters, a fraction of the compile for slower code (docs/results.md,
# "Quick compiles for short runs"): tinyscale's one-off inits always, a run's steps and
# sampler with train.quick_compile.
QUICK_COMPILE = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}


def compile_options(quick: bool, platform: str | None = None) -> dict | None:
    """jax.jit's compiler_options: QUICK_COMPILE if `quick` and the programs are for CPU
    (`platform`, default JAX's default backend); otherwise XLA's defaults (None)."""
    return QUICK_COMPILE if quick and (platform or jax.default_backend()) == "cpu" else None


def initialize_distributed(distributed, tpu: bool = False) -> None:
    """Join a multi-process job: an explicit coordinator, SLURM, or a Cloud TPU slice.

    `distributed` is a config's `distributed` section. Inside `srun` with several tasks the
    job comes from SLURM's environment (slurm_job()). A slice's hosts are named by
    `TPU_WORKER_HOSTNAMES` and `TPU_WORKER_ID` where the environment sets them (GKE; the
    tests' stand-in VMs, with `JAX_COORDINATOR_PORT`); on a Cloud TPU VM (`tpu`, which the
    TPU launcher passes) JAX reads them from the metadata server. A single process on one
    machine needs nothing and does nothing here.

    The coordination service watches every process: when one stops sending heartbeats
    for `distributed.heartbeat_timeout_s` (it died), every other process is ended, so no
    peer waits forever for it.
    """
    if jax.distributed.is_initialized():
        return
    timeouts = {"heartbeat_timeout_seconds": distributed.heartbeat_timeout_s,
                "shutdown_timeout_seconds": distributed.shutdown_timeout_s}
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    slurm = slurm_job()
    if distributed.coordinator:
        jax.distributed.initialize(distributed.coordinator,
                                   num_processes=distributed.num_processes,
                                   process_id=distributed.process_id, **timeouts)
    elif slurm:
        coordinator, num_processes, process_id = slurm
        # every device the task sees: SLURM gives each task its own GPUs (--gpus-per-task)
        # where JAX's own SLURM detection would keep one device per process
        jax.distributed.initialize(coordinator, num_processes=num_processes,
                                   process_id=process_id, **timeouts)
    elif hosts:  # one name: a single host, nothing to join
        names = hosts.split(",")
        if len(names) == 1:
            return
        port = os.environ.get("JAX_COORDINATOR_PORT", "8476")
        jax.distributed.initialize(f"{names[0]}:{port}", num_processes=len(names),
                                   process_id=int(os.environ.get("TPU_WORKER_ID", "0")),
                                   **timeouts)
    elif tpu:  # a Cloud TPU VM: its slice from the metadata server
        jax.distributed.initialize(**timeouts)


def slurm_job() -> tuple[str, int, int] | None:
    """(coordinator host:port, processes, this process's index) of a SLURM job step with
    several tasks (`srun` sets SLURM_STEP_*; the batch script itself is one process);
    None elsewhere. The coordinator is the step's first node; its port is derived from the
    job id (an array task has its own), in 61440-65535, above Linux's ephemeral ports,
    unless JAX_COORDINATOR_PORT names one."""
    tasks = int(os.environ.get("SLURM_STEP_NUM_TASKS", "1"))
    if tasks <= 1:
        return None
    nodes = os.environ.get("SLURM_STEP_NODELIST") or os.environ["SLURM_JOB_NODELIST"]
    port = os.environ.get("JAX_COORDINATOR_PORT") or \
        61440 + int(os.environ["SLURM_JOB_ID"]) % 4096
    return f"{first_host(nodes)}:{port}", tasks, int(os.environ["SLURM_PROCID"])


def first_host(nodelist: str) -> str:
    """The first host of a SLURM host list: 'gpu[003-004,9],cpu1' -> 'gpu003',
    'rack[1-2]-n[01-04]' -> 'rack1-n01'."""
    first = re.match(r"[^,\[]*(?:\[[^\]]*\][^,\[]*)*", nodelist).group(0)
    return re.sub(r"\[([^\],-]*)[^\]]*\]", r"\1", first)


def barrier(name: str, timeout_s: float = 6 * 3600) -> None:
    """Wait until every process reaches `name`: through the coordination service, not a
    device collective, so one process may work alone for long (e.g. evaluating) while
    the others wait. Nothing to wait for in a single process."""
    if jax.process_count() == 1:
        return
    distributed.global_state.client.wait_at_barrier(name, int(timeout_s * 1000))


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
    experts = m.n_experts
    if experts and experts % fsdp:
        raise TinyscaleError(f"config.model.n_experts={experts} does not split over the fsdp "
                             f"axis ({fsdp}) that shards the experts: use a multiple of "
                             f"{fsdp} experts, or change config.mesh.fsdp.")
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
