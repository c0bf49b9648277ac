"""A Redis primary, its replica and three sentinels as real processes on loopback, from the same
redis-server binary as the embedded default (`redis-server --sentinel`).

The replica replicates as a user of its own, so a test can cut the link (as a partition between
the two would: clients and sentinels still reach both) and make the primary acknowledge writes
the replica never receives. (A TCP proxy in between would not do: sentinels point a replica of
an address they don't monitor back at the primary itself.)
"""

from __future__ import annotations

import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from cli.launcher import free_port, redis_server_binary, stop

MASTER = "facesense"
DOWN_AFTER_MS = 1000  # how long a silent primary takes to be judged down: a failover in seconds


@dataclass
class Sentinels:
    """The processes of one Sentinel group and how to reach them."""

    root: Path
    password: str
    primary: subprocess.Popen
    replica: subprocess.Popen
    ports: dict[str, int]  # primary, replica
    sentinel_ports: list[int]
    sentinels: list[subprocess.Popen] = field(default_factory=list)

    @property
    def addresses(self) -> str:
        """FACESENSE_REDIS_SENTINELS for this group."""
        return ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)

    def master_port(self) -> int | None:
        """The primary's port as the first sentinel that answers names it now."""
        for port in self.sentinel_ports:
            try:
                addr = redis.Redis(port=port, socket_timeout=1).sentinel_get_master_addr_by_name(MASTER)
                return int(addr[1]) if addr else None
            except redis.RedisError:
                continue
        return None

    def node(self, name: str) -> redis.Redis:
        """A plain client of the primary or the replica process (by role at start)."""
        return redis.Redis(port=self.ports[name], password=self.password, socket_timeout=2)

    def ready(self) -> bool:
        """True once every sentinel knows the primary, the replica (in sync) and the others."""
        try:
            for port in self.sentinel_ports:
                s = redis.Redis(port=port, socket_timeout=1)
                replicas = s.sentinel_slaves(MASTER)
                if len(s.sentinel_sentinels(MASTER)) < 2 or len(replicas) != 1:
                    return False
                if replicas[0]["is_sdown"] or replicas[0].get("master-link-status") != "ok":
                    return False
            return self.node("replica").info("replication")["master_link_status"] == "up"
        except redis.RedisError:
            return False

    def cut_replication(self) -> None:
        """Refuse the replica's user on the primary and drop its link: from now on the primary
        acknowledges writes that the replica does not get."""
        primary = self.node("primary")
        primary.execute_command("ACL", "SETUSER", "replication", "off")
        primary.execute_command("CLIENT", "KILL", "TYPE", "replica")
        while self.node("replica").info("replication")["master_link_status"] != "down":
            time.sleep(0.01)

    def stop(self) -> None:
        stop([*self.sentinels, self.replica, self.primary], timeout=5)


def _redis(root: Path, name: str, port: int, password: str, extra: str = "") -> subprocess.Popen:
    """One redis-server with its config in a file (the password off the command line)."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "redis.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {folder}\nlogfile {folder / 'log'}\n"
                    f"requirepass {password}\nmasteruser replication\nmasterauth {password}\n"
                    f"user replication on >{password} +@all ~*\nsave \"\"\n"
                    f"appendonly yes\n{extra}")
    return subprocess.Popen([redis_server_binary(), str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _sentinel(root: Path, index: int, port: int, primary: int, password: str) -> subprocess.Popen:
    """One sentinel (it rewrites its own config file, so each has its own)."""
    folder = root / f"sentinel{index}"
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "sentinel.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {folder}\nlogfile {folder / 'log'}\n"
                    f"sentinel monitor {MASTER} 127.0.0.1 {primary} 2\n"
                    f"sentinel auth-pass {MASTER} {password}\n"
                    f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
                    f"sentinel failover-timeout {MASTER} 10000\n")
    return subprocess.Popen([redis_server_binary(), str(conf), "--sentinel"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_sentinels(root: Path, timeout: float = 30) -> Sentinels:
    """A primary, a replica of it and three sentinels (quorum 2), once all agree."""
    password = secrets.token_hex(16)
    ports = {"primary": free_port(), "replica": free_port()}
    primary = _redis(root, "primary", ports["primary"], password)
    replica = _redis(root, "replica", ports["replica"], password,
                     f"replicaof 127.0.0.1 {ports['primary']}\n")
    group = Sentinels(root, password, primary, replica, ports, [free_port() for _ in range(3)])
    group.sentinels = [_sentinel(root, i, port, ports["primary"], password)
                       for i, port in enumerate(group.sentinel_ports)]
    deadline = time.monotonic() + timeout
    while not group.ready():
        if time.monotonic() > deadline or any(p.poll() is not None for p in
                                              [primary, replica, *group.sentinels]):
            group.stop()
            raise RuntimeError(f"the Sentinel group did not come up; see the logs under {root}")
        time.sleep(0.1)
    return group
