"""A real one-node SLURM cluster for the tests, started in a temporary folder and stopped after.

Debian's ``slurmctld``, ``slurmd``, ``slurm-client`` and ``munge`` packages (slurm-wlm 22.05)
run as root: a private ``munged`` (its own key and socket in the folder), ``slurmctld`` and
``slurmd`` on free ports, one partition ``debug`` with this host's CPUs and no GPUs, and no
accounting (``sacct`` does not work, as on many small clusters). Nothing outside the folder is
written: the client tools find the cluster through ``SLURM_CONF``, which :meth:`SlurmCluster.env`
gives and the ``slurm_cluster`` fixture sets for the session.

The tests that need it are marked ``slurm`` and run only when selected (``pytest -m slurm``, as
CI does after installing the packages); without root or the packages they are skipped with the
command that installs them.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional

DAEMONS = ("slurmctld", "slurmd", "munged", "mungekey", "sbatch", "squeue", "scontrol", "scancel", "sinfo")
INSTALL = "apt-get install -y slurmctld slurmd slurm-client munge"
PARTITION = "debug"


def why_not() -> Optional[str]:
    """Why no cluster can start here (None when it can)."""
    if os.geteuid() != 0:
        return "the test SLURM cluster runs its daemons as root"
    missing = [d for d in DAEMONS if _which(d) is None]
    if missing:
        return f"no {', '.join(missing)}: install them with `{INSTALL}` (Debian/Ubuntu)"
    return None


def _which(name: str) -> Optional[str]:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class SlurmCluster:
    """One controller, one node, one partition, in ``folder``; :meth:`start` then :meth:`stop`."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.conf = self.folder / "slurm.conf"
        self.munge_socket = self.folder / "munge" / "munge.socket"
        self.host = socket.gethostname().split(".")[0]
        self.cpus = os.cpu_count() or 1

    def env(self) -> Dict[str, str]:
        """The environment for the client tools (sbatch, squeue, ...) to reach this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        """A client command against this cluster; its output as text."""
        return subprocess.run(list(command), env=self.env(), capture_output=True, text=True,
                              check=check, timeout=60)

    def _write_conf(self) -> None:
        f = self.folder
        mem_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        lines = [
            "ClusterName=clipfittest", f"SlurmctldHost={self.host}",
            f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
            "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={f / 'state'}", f"SlurmdSpoolDir={f / 'spool'}",
            f"SlurmctldPidFile={f / 'slurmctld.pid'}", f"SlurmdPidFile={f / 'slurmd.pid'}",
            f"SlurmctldLogFile={f / 'log' / 'slurmctld.log'}", f"SlurmdLogFile={f / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SchedulerType=sched/backfill", "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
            "ReturnToService=2", "MpiDefault=none", "KillWait=5",
            f"NodeName={self.host} CPUs={self.cpus} RealMemory={max(1, mem_mb - 1024)} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes={self.host} Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 30.0) -> None:
        """Write the configuration, start munged, slurmctld and slurmd; wait for an idle node."""
        for sub in ("state", "spool", "log", "munge"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        (self.folder / "munge").chmod(0o755)
        key = self.folder / "munge" / "munge.key"
        subprocess.run([_which("mungekey"), "--create", f"--keyfile={key}"], check=True)
        subprocess.run([_which("munged"), "--force", f"--socket={self.munge_socket}", f"--key-file={key}",
                        f"--log-file={self.folder / 'log' / 'munged.log'}",
                        f"--pid-file={self.folder / 'munge' / 'munged.pid'}",
                        f"--seed-file={self.folder / 'munge' / 'munged.seed'}"], check=True)
        self._write_conf()
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([_which(daemon), "-f", str(self.conf)], check=True, env=self.env())
        deadline = time.time() + timeout
        while time.time() < deadline:
            state = self.run("sinfo", "-h", "-o", "%T", check=False).stdout.split()
            if state and state[0] == "idle":
                return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the test SLURM cluster did not come up in {timeout:.0f} s; see {self.folder / 'log'}")

    def jobs(self, tries: int = 10) -> List[str]:
        """``JOBID STATE`` of every job the controller knows, pending or running (``squeue``
        asked again while the controller does not answer)."""
        for _ in range(tries - 1):
            proc = self.run("squeue", "-h", "-o", "%i %T", check=False)
            if proc.returncode == 0:
                return proc.stdout.splitlines()
            time.sleep(1)
        return self.run("squeue", "-h", "-o", "%i %T").stdout.splitlines()

    def stop(self) -> None:
        """Cancel every job, then stop slurmd, slurmctld and munged (in that order)."""
        if self.run("squeue", "-h", "-o", "%i", check=False).stdout.strip():
            self.run("scancel", "--full", "--user", "root", check=False)
            deadline = time.time() + 20
            while self.jobs(tries=2) and time.time() < deadline:
                time.sleep(0.5)
        for pid_file in ("slurmd.pid", "slurmctld.pid", "munge/munged.pid"):
            _stop_pid(self.folder / pid_file)


def _stop_pid(pid_file: Path, timeout: float = 10.0) -> None:
    """SIGTERM the daemon named in ``pid_file`` and wait for it to exit (then SIGKILL)."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        return
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, 9)
