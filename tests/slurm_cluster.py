"""A real single-node SLURM cluster on 127.0.0.1 for tests (Debian's slurm-wlm).

No cgroups (they fail in this sandbox), no accounting, no munge (auth/none).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

CONF = """ClusterName=tinyscale
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def _all_cores():
    """The daemons see every core the node declares (a test worker may be pinned to one:
    tests/conftest.py)."""
    os.sched_setaffinity(0, range(os.cpu_count()))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, root: str, cpus: int = 2):
        self.root = root
        for sub in ("state", "spool"):
            os.makedirs(os.path.join(root, sub), exist_ok=True)
        self.conf = os.path.join(root, "slurm.conf")
        with open(self.conf, "w") as f:
            f.write(CONF.format(root=root, ctld_port=_port(), slurmd_port=_port(), cpus=cpus))
        self.env = {**os.environ, "SLURM_CONF": self.conf}
        self.procs = []

    def start(self, timeout: float = 60) -> None:
        for cmd in (["slurmctld", "-D", "-i", "-f", self.conf],
                    ["slurmd", "-D", "-f", self.conf, "-N", "localhost"]):
            log = open(os.path.join(self.root, os.path.basename(cmd[0]) + ".out"), "w")
            self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=log,
                                               stderr=subprocess.STDOUT,
                                               preexec_fn=_all_cores))
        deadline = time.time() + timeout
        while time.time() < deadline:
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=self.env,
                                 capture_output=True, text=True)
            if out.stdout.strip() in ("idle", "mixed", "allocated"):
                return
            time.sleep(0.5)
        raise RuntimeError(f"SLURM did not come up: {self.logs()}")

    def logs(self) -> str:
        text = ""
        for name in ("slurmctld.log", "slurmd.log", "slurmctld.out", "slurmd.out"):
            path = os.path.join(self.root, name)
            if os.path.exists(path):
                text += f"--- {name}\n" + open(path).read()[-3000:]
        return text

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def available() -> bool:
    return all(shutil.which(x) for x in ("slurmctld", "slurmd", "sbatch", "squeue"))
