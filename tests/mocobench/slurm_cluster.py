"""A real one-node SLURM cluster on this machine, for the tests: munge, slurmctld and slurmd.

Everything lives in a private temporary folder: munge's key and socket, ``slurm.conf``, state and
spool folders, logs, and free ports on loopback; nothing of the system's own munge or SLURM set-up
is touched. ``munged`` runs as the ``munge`` user, ``slurmctld`` and ``slurmd`` as root (both in the
foreground, so the processes stopped at the end are exactly the ones started here).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PROGRAMS = {"munged": "munge", "slurmctld": "slurm-wlm", "slurmd": "slurm-wlm", "sbatch": "slurm-wlm",
            "sinfo": "slurm-wlm", "squeue": "slurm-wlm", "scancel": "slurm-wlm"}
PARTITION = "debug"


def why_not() -> str | None:
    """Why a cluster cannot be started here (``None`` if it can)."""
    missing = sorted({pkg for prog, pkg in PROGRAMS.items()
                      if not shutil.which(prog) and not Path("/usr/sbin", prog).exists()})
    if missing:
        return f"the Debian package(s) {', '.join(missing)} are not installed (apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "slurmctld and slurmd must be started as root"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "there is no 'munge' user (the munge package creates it)"
    return None


def _free_ports(n: int) -> list[int]:
    """``n`` different free ports: each socket stays bound until all are read, so the kernel
    cannot hand the same port out twice."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _node_hardware() -> tuple[int, int]:
    """(CPUs, RealMemory MB) as ``slurmd -C`` sees this machine."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=30).stdout
    fields = dict(kv.split("=", 1) for kv in out.split() if "=" in kv)
    return int(fields.get("CPUs", os.cpu_count() or 1)), max(1, int(fields.get("RealMemory", 1024)) - 512)


def slurm_conf(root: Path, host: str, ctld_port: int, slurmd_port: int, munge_socket: Path) -> str:
    cpus, mem = _node_hardware()
    return f"""\
ClusterName=mocobench-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobRequeue=1
ReturnToService=2
KillWait=10
MinJobAge=600
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} State=UNKNOWN
PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class Cluster:
    root: Path
    conf: Path
    host: str
    partition: str = PARTITION
    procs: list[subprocess.Popen] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str, check: bool = True) -> str:
        p = subprocess.run(list(cmd), capture_output=True, text=True, env=self.env(), timeout=60)
        if check and p.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
        return p.stdout

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.root.glob("*.log")))

    def stop(self) -> None:
        """Cancel what is still queued, then stop exactly the daemons started here (newest first)."""
        try:
            self.run("scancel", "--partition", self.partition, check=False)
        except (OSError, subprocess.SubprocessError):
            pass
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs.clear()


def start(timeout_s: float = 60) -> Cluster:
    """Start munged, slurmctld and slurmd; return once ``sinfo`` shows the node idle."""
    host = socket.gethostname().split(".")[0]
    root = Path(tempfile.mkdtemp(prefix="mocobench-slurm-"))
    root.chmod(0o755)   # munged (as the munge user) must reach its own folder below
    munge_dir = root / "munge"
    munge_dir.mkdir(mode=0o700)
    key = munge_dir / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    user = pwd.getpwnam("munge")
    for p in (munge_dir, key):
        os.chown(p, user.pw_uid, user.pw_gid)
    munge_socket = munge_dir / "munge.socket"
    for d in ("state", "spool"):
        (root / d).mkdir()
    conf = root / "slurm.conf"
    conf.write_text(slurm_conf(root, host, *_free_ports(2), munge_socket))
    cluster = Cluster(root, conf, host)
    try:
        out = open(root / "daemons.out", "ab")
        cluster.procs.append(subprocess.Popen(
            ["munged", "--foreground", "--force", f"--key-file={key}", f"--socket={munge_socket}",
             f"--pid-file={munge_dir / 'munged.pid'}", f"--log-file={munge_dir / 'munged.log'}",
             f"--seed-file={munge_dir / 'munged.seed'}"],
            user=user.pw_uid, group=user.pw_gid, stdout=out, stderr=out))
        _wait(lambda: munge_socket.exists(), 20, "munged did not create its socket", cluster)
        cluster.procs.append(subprocess.Popen(["slurmctld", "-D", "-i", "-f", str(conf)], stdout=out, stderr=out))
        cluster.procs.append(subprocess.Popen(["slurmd", "-D", "-f", str(conf), "-N", host], stdout=out, stderr=out))
        _wait(lambda: cluster.run("sinfo", "-h", "-N", "-o", "%T", check=False).strip() == "idle", timeout_s,
              "the node never became idle in sinfo", cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait(ok, timeout_s: float, what: str, cluster: Cluster) -> None:
    deadline = time.time() + timeout_s
    while not ok():
        dead = [p.args[0] for p in cluster.procs if p.poll() is not None]
        if dead or time.time() > deadline:
            raise RuntimeError(f"{what} (exited: {dead or 'none'})\n{cluster.logs()}\n"
                               f"{(cluster.root / 'daemons.out').read_text(errors='replace')[-2000:]}")
        time.sleep(0.3)
