"""A private Slurm 22.05 cluster in a temp folder, for the slurm tier.

One munged, one slurmctld and one slurmd per node, all as root on 127.0.0.1 with free
ports; the GPUs are character devices under the folder (``mknod``, major 195 like NVIDIA's),
so nothing under /etc or /dev changes. Each node runs its own slurmd (``slurmd -N``), so a
node may hold a single GPU and a whole-node reservation reserves exactly that GPU.

Partitions over the same nodes: ``gpu`` (default) and ``cpu`` (PriorityTier 1, their jobs
requeued when a higher tier needs their place), ``steady`` (PriorityTier 1, never
preempted) and ``werkhub-hold`` (PriorityTier 2, RootOnly) for werkhub's hold jobs under
``PreemptType=preempt/partition_prio``: the slurm.conf docs/slurm.md asks of a site for
bookings of part of a node. Since then a job of ``gpu`` or ``cpu`` on a GPU that werkhub's
reconciliation holds for someone else's booking is requeued, as on such a site. With
``accounting=True`` the cluster also runs slurmdbd on a private MariaDB (sacct with GPU TRES,
sreport); by default accounting is the jobcomp file only (``sacct -c``).

Daemons stop by their own process ids: SIGTERM, then SIGKILL after a few seconds (a slurmd
that cannot reach the controller ignores SIGTERM).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.net import free_ports

#: the programs the tier needs (Debian: slurmctld slurmd slurm-client munge)
PROGRAMS = ("munged", "slurmctld", "slurmd", "scontrol", "sbatch", "sinfo", "useradd")
#: and a cluster with accounting in slurmdbd (Debian: slurmdbd mariadb-server)
ACCOUNTING_PROGRAMS = ("slurmdbd", "mariadbd", "mariadb-install-db", "mariadb", "sacct", "sreport")


#: a partition over the same nodes for work without GPUs (servers outside a booking)
CPU_PARTITION = "cpu"
#: the partition of werkhub's hold jobs over the same nodes (docs/slurm.md "Bookings of
#: part of a node"): RootOnly (only werkhub, as root, places jobs there), a higher
#: PriorityTier than ``gpu`` and ``cpu``, whose jobs are requeued when a hold needs their
#: place; holds are cancelled by the booked user's jobs in the booking's own partition
#: ``werkhub-b<id>`` (made by werkhub, one tier higher still)
HOLD_PARTITION = "werkhub-hold"
#: a partition whose jobs Slurm never preempts (PreemptMode=OFF): werkhub's reconciliation
#: requeues them when they keep a booked slot from starting
STEADY_PARTITION = "steady"


def missing_programs(accounting: bool = False) -> list[str]:
    wanted = PROGRAMS + (ACCOUNTING_PROGRAMS if accounting else ())
    return [p for p in wanted if shutil.which(p) is None]


@dataclass(frozen=True)
class NodeSpec:
    """A node of the test cluster and the GPUs of one type it offers."""

    name: str
    gpus: int
    gpu_type: str = "a100"
    cpus: int = 2
    memory_mb: int = 2000


@dataclass
class Daemon:
    name: str
    argv: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None


@dataclass
class SlurmCluster:
    """A cluster under ``root`` (made by :meth:`create`); ``start()`` it, ``stop()`` it."""

    root: Path
    nodes: Sequence[NodeSpec]
    partition: str = "gpu"
    ctl_port: int = 0
    node_ports: dict[str, int] = field(default_factory=dict)
    daemons: dict[str, Daemon] = field(default_factory=dict)
    #: accounting in slurmdbd on a private MariaDB (sacct --json, sreport); otherwise only
    #: the jobcomp file (sacct -c)
    accounting: bool = False
    db_port: int = 0
    dbd_port: int = 0

    @classmethod
    def create(
        cls, nodes: Sequence[NodeSpec], partition: str = "gpu", accounting: bool = False
    ) -> SlurmCluster:
        # directly under /tmp, world-traversable: jobs run as other users and munged needs
        # o+x on every folder up to its socket
        root = Path(tempfile.mkdtemp(prefix="werkhub-slurm-"))
        root.chmod(0o755)
        cluster = cls(root=root, nodes=list(nodes), partition=partition, accounting=accounting)
        cluster._lay_out()
        return cluster

    # -- files ---------------------------------------------------------------------------

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf), "TZ": "UTC"}

    @property
    def jobs_dir(self) -> Path:
        """A folder every user may write: working directory and output of test jobs."""
        return self.root / "jobs"

    def _lay_out(self) -> None:
        r = self.root
        for sub in ("etc", "state", "log", "run", "munge", "munge-run", "dev", "jobs"):
            (r / sub).mkdir()
        (r / "munge-run").chmod(0o755)
        (r / "munge").chmod(0o700)
        (r / "jobs").chmod(0o1777)
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        ports = free_ports(4 + len(self.nodes))
        self.ctl_port, slurmd_port, self.db_port, self.dbd_port = ports[:4]
        self.node_ports = {n.name: p for n, p in zip(self.nodes, ports[4:], strict=True)}
        gres_lines = ["AutoDetect=off"]
        node_lines = []
        minor = 0
        for node in self.nodes:
            (r / "spool" / node.name).mkdir(parents=True)
            files = []
            for _ in range(node.gpus):
                dev = r / "dev" / f"nvidia{minor}"
                os.mknod(dev, 0o666 | 0o020000, os.makedev(195, minor))
                files.append(str(dev))
                minor += 1
            gres_lines.append(
                f"NodeName={node.name} Name=gpu Type={node.gpu_type} File={','.join(files)}"
            )
            node_lines.append(
                f"NodeName={node.name} NodeAddr=127.0.0.1 NodeHostname=localhost "
                f"Port={self.node_ports[node.name]} CPUs={node.cpus} "
                f"RealMemory={node.memory_mb} Gres=gpu:{node.gpu_type}:{node.gpus} State=UNKNOWN"
            )
        names = ",".join(n.name for n in self.nodes)
        conf = f"""\
ClusterName=werkhubtest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={self.ctl_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={r}/munge-run/munge.socket.2
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/%n
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd-%n.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd-%n.log
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
# addresses looked up as IPv4 or IPv6: Slurm's IPv4-only lookups ask getaddrinfo for
# AI_ADDRCONFIG, which finds nothing where loopback is the only interface (.ci/run's
# loopback-only network namespace) and slurmctld would not start
CommunicationParameters=EnableIPv6
ReturnToService=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
GresTypes=gpu
{self._accounting_lines()}
JobCompType=jobcomp/filetxt
JobCompLoc={r}/log/jobcomp.txt
SlurmdParameters=config_overrides
SlurmctldTimeout=10
SlurmdTimeout=30
{chr(10).join(node_lines)}
PartitionName={self.partition} Nodes={names} Default=YES MaxTime=INFINITE State=UP \
PriorityTier=1 PreemptMode=REQUEUE
PartitionName={CPU_PARTITION} Nodes={names} Default=NO MaxTime=INFINITE State=UP \
PriorityTier=1 PreemptMode=REQUEUE
PartitionName={STEADY_PARTITION} Nodes={names} Default=NO MaxTime=INFINITE State=UP \
PriorityTier=1 PreemptMode=OFF
PartitionName={HOLD_PARTITION} Nodes={names} Default=NO MaxTime=INFINITE State=UP \
PriorityTier=2 PreemptMode=CANCEL RootOnly=YES
"""
        self.conf.write_text(conf)
        (r / "etc" / "gres.conf").write_text("\n".join(gres_lines) + "\n")
        self.daemons = {
            "munged": Daemon(
                "munged",
                [
                    "munged",
                    "-F",
                    f"--socket={r}/munge-run/munge.socket.2",
                    f"--key-file={key}",
                    f"--log-file={r}/log/munged.log",
                    f"--pid-file={r}/run/munged.pid",
                    f"--seed-file={r}/munge/munged.seed",
                ],
                r / "log" / "munged.out",
            ),
            "slurmctld": Daemon(
                "slurmctld",
                ["slurmctld", "-D", "-f", str(self.conf)],
                r / "log" / "slurmctld.out",
            ),
        }
        for node in self.nodes:
            self.daemons[node.name] = Daemon(
                node.name,
                ["slurmd", "-D", "-N", node.name, "-f", str(self.conf)],
                r / "log" / f"slurmd-{node.name}.out",
            )
        if self.accounting:
            self._lay_out_accounting()

    # -- daemons -------------------------------------------------------------------------

    def _spawn(self, name: str) -> None:
        daemon = self.daemons[name]
        if daemon.process is not None and daemon.process.poll() is None:
            return
        with daemon.log.open("ab") as log:
            daemon.process = subprocess.Popen(
                daemon.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.root,
            )

    def _end(self, name: str, grace: float = 5) -> None:
        daemon = self.daemons.get(name)
        process = daemon.process if daemon else None
        if daemon is None or process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        daemon.process = None

    def start(self, timeout: float = 60) -> None:
        """Start every daemon and wait until every node is idle."""
        self._spawn("munged")
        self._wait_for(lambda: (self.root / "munge-run" / "munge.socket.2").exists(), 10, "munged")
        if self.accounting:
            self._start_accounting(timeout)
        self._spawn("slurmctld")
        for node in self.nodes:
            self._spawn(node.name)
        self.wait_idle(timeout)

    def stop(self) -> None:
        for node in self.nodes:
            self._end(node.name)
        self._end("slurmctld")
        if self.accounting:
            self._end("slurmdbd")
            self._end("mariadbd")
        self._end("munged")

    def stop_controller(self) -> None:
        self._end("slurmctld", grace=15)

    def start_controller(self, timeout: float = 60) -> None:
        self._spawn("slurmctld")
        process = self.daemons["slurmctld"].process

        def answers() -> bool:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"slurmctld exited with {process.returncode}\n{self.logs()}")
            return self.scontrol("ping").returncode == 0

        self._wait_for(answers, timeout, "slurmctld")

    def restart_controller(self, timeout: float = 60) -> None:
        self.stop_controller()
        self.start_controller(timeout)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- accounting (slurmdbd on a private MariaDB) --------------------------------------

    def _accounting_lines(self) -> str:
        if not self.accounting:
            return "AccountingStorageType=accounting_storage/none"
        return "\n".join(
            [
                "AccountingStorageType=accounting_storage/slurmdbd",
                "AccountingStorageHost=127.0.0.1",
                f"AccountingStoragePort={self.dbd_port}",
                "AccountingStorageTRES=gres/gpu,gres/gpu:a100",
                # without it the connection to slurmdbd uses the default munge socket
                f"AccountingStoragePass={self.root}/munge-run/munge.socket.2",
            ]
        )

    def _lay_out_accounting(self) -> None:
        r = self.root
        for sub in ("db", "dbrun"):
            (r / sub).mkdir()
        shutil.chown(r / "dbrun", "mysql", "mysql")
        dbd_conf = r / "etc" / "slurmdbd.conf"
        dbd_conf.write_text(
            "\n".join(
                [
                    "AuthType=auth/munge",
                    f"AuthInfo=socket={r}/munge-run/munge.socket.2",
                    "DbdAddr=127.0.0.1",
                    "DbdHost=localhost",
                    # as in slurm.conf: IPv4-only lookups find nothing in a loopback-only
                    # network namespace (.ci/run), and slurmdbd would not listen
                    "CommunicationParameters=EnableIPv6",
                    f"DbdPort={self.dbd_port}",
                    "SlurmUser=root",
                    "StorageType=accounting_storage/mysql",
                    "StorageHost=127.0.0.1",
                    f"StoragePort={self.db_port}",
                    "StorageUser=slurm",
                    "StoragePass=werkhub-test",
                    "StorageLoc=slurm_acct",
                    f"LogFile={r}/log/slurmdbd.log",
                    f"PidFile={r}/run/slurmdbd.pid",
                ]
            )
            + "\n"
        )
        dbd_conf.chmod(0o600)
        self.daemons["mariadbd"] = Daemon(
            "mariadbd",
            [
                "mariadbd",
                "--no-defaults",
                "--user=mysql",
                f"--datadir={r}/db",
                f"--socket={r}/dbrun/mysqld.sock",
                "--bind-address=127.0.0.1",
                f"--port={self.db_port}",
                "--innodb-buffer-pool-size=64M",
                f"--pid-file={r}/dbrun/mariadbd.pid",
            ],
            r / "log" / "mariadbd.out",
        )
        # slurmdbd has no -f: it reads slurmdbd.conf beside SLURM_CONF's slurm.conf
        self.daemons["slurmdbd"] = Daemon(
            "slurmdbd", ["slurmdbd", "-D"], r / "log" / "slurmdbd.out"
        )

    def _start_accounting(self, timeout: float) -> None:
        r = self.root
        done = self.run(
            "mariadb-install-db",
            "--user=mysql",
            f"--datadir={r}/db",
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {done.stderr[-2000:]}")
        self._spawn("mariadbd")
        sql = (
            "CREATE DATABASE slurm_acct; "
            "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'werkhub-test'; "
            "GRANT ALL ON slurm_acct.* TO 'slurm'@'127.0.0.1';"
        )

        def database() -> bool:
            ping = self.run(
                "mariadb", f"--socket={r}/dbrun/mysqld.sock", "-u", "root", "-e", "SELECT 1"
            )
            return ping.returncode == 0

        self._wait_for(database, timeout, "mariadbd")
        made = self.run("mariadb", f"--socket={r}/dbrun/mysqld.sock", "-u", "root", "-e", sql)
        if made.returncode != 0:
            raise RuntimeError(f"the accounting database: {made.stderr}")
        self._spawn("slurmdbd")

        def slurmdbd() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", self.dbd_port)) == 0

        self._wait_for(slurmdbd, timeout, "slurmdbd")

    # -- clients -------------------------------------------------------------------------

    def run(self, *argv: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv), env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def scontrol(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run("scontrol", *args)

    def node_states(self) -> dict[str, str]:
        result = self.run("sinfo", "-h", "-N", "-o", "%N %t")
        if result.returncode != 0:
            return {}
        return dict(line.split() for line in result.stdout.splitlines() if line.strip())

    def wait_idle(self, timeout: float = 60) -> None:
        """Wait until every node is idle and responding (``idle``, not ``idle*``)."""
        want = {n.name for n in self.nodes}

        def idle() -> bool:
            states = self.node_states()
            return set(states) == want and all(s == "idle" for s in states.values())

        try:
            self._wait_for(idle, timeout, "every node idle")
        except RuntimeError as exc:
            raise RuntimeError(f"node states {self.node_states()}; {exc}") from None

    def _wait_for(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"slurm test cluster: timed out waiting for {what}\n{self.logs()}"
                )
            time.sleep(0.1)

    def logs(self, tail: int = 30) -> str:
        out = []
        for path in sorted((self.root / "log").glob("*")):
            lines = path.read_text(errors="replace").splitlines()[-tail:]
            out.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(out)

    # -- jobs ----------------------------------------------------------------------------

    def submit(
        self,
        user: str,
        *options: str,
        wrap: str = "sleep 300",
        minutes: int = 5,
    ) -> str:
        """Submit a batch job as OS user ``user`` (root submits on the user's behalf) and
        return its id; it needs one GPU and has a time limit (an unlimited job would wait
        for every pending reservation)."""
        argv = [
            "sbatch",
            "--parsable",
            f"--uid={user}",
            f"--gid={user}",
            f"--chdir={self.jobs_dir}",
            "--output=/dev/null",
            f"--partition={self.partition}",
            "--gres=gpu:1",
            "--cpus-per-task=1",
            "--mem=100M",
            f"--time={minutes}",
            *options,
            f"--wrap={wrap}",
        ]
        result = self.run(*argv)
        if result.returncode != 0:
            raise RuntimeError(f"sbatch failed: {result.stderr.strip()}")
        return result.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol -o show job`` of one job as key/value pairs (empty when unknown)."""
        result = self.scontrol("-o", "show", "job", job_id)
        if result.returncode != 0:
            return {}
        fields: dict[str, str] = {}
        for token in result.stdout.split():
            key, sep, value = token.partition("=")
            if sep and key not in fields:
                fields[key] = value
        return fields

    def cancel(self, *job_ids: str) -> None:
        if job_ids:
            self.run("scancel", *job_ids)
