"""A network namespace per host, for the multi-host tests run as root (DESIGN 7, issue 13).

Each host's broker runs in a namespace of its own (``ip netns exec``) whose only link is one
end of a veth pair; the other end is a port of a bridge in the root namespace, which holds
the address PostgreSQL listens on. So a host reaches the database over TCP exactly as a
separate machine would, and ``ip link set <veth> down`` inside its namespace cuts that
host off (a partition) without touching the others.

Bridges (and the CLI) stay in the root namespace: they reach their broker by its UNIX
socket, a path in the file system, which network namespaces do not separate (only abstract
sockets are per namespace). The pid namespace is shared too, so the broker still verifies
a bridge's agent from ``SO_PEERCRED`` as on one machine.

Every name carries the test process's pid (interface names have at most 15 bytes), so
parallel workers do not collide; what a killed run left behind is removed by the next.
"""

from __future__ import annotations

import fcntl
import ipaddress
import itertools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

#: The addresses the labs take their /24 from: 10.213.X.0/24 with X free.
PREFIX = "10.213"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


def unavailable() -> str | None:
    """Why this machine cannot give each host a namespace (the fallback's reason), or None."""
    if os.environ.get("CLAUDE_PEERS_TEST_NETNS") == "0":
        return "CLAUDE_PEERS_TEST_NETNS=0"
    if os.geteuid() != 0:
        return "not running as root: network namespaces need it"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is missing"
    probe = f"cpprobe{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip() or made.returncode}"
    try:
        veth = _ip("link", "add", f"cpq{os.getpid()}", "type", "veth", "peer", "name", f"cpw{os.getpid()}",
                   "netns", probe, check=False)
        if veth.returncode != 0:
            return f"ip link add ... type veth failed: {veth.stderr.strip() or veth.returncode}"
        _ip("link", "del", f"cpq{os.getpid()}", check=False)
    finally:
        _ip("netns", "del", probe, check=False)
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers() -> None:
    """Namespaces and bridges of test processes that no longer run (a run killed midway)."""
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        match = re.match(r"cp(\d+)-\S+", line)
        if match and not _pid_alive(int(match.group(1))):
            _ip("netns", "del", line.split()[0], check=False)
    for line in _ip("-o", "link", "show", "type", "bridge", check=False).stdout.splitlines():
        match = re.search(r": cpb(\d+)[:@]", line)
        if match and not _pid_alive(int(match.group(1))):
            _ip("link", "del", f"cpb{match.group(1)}", check=False)


@dataclass
class Namespace:
    """One host's namespace: its name, its veth's name inside and its address."""

    name: str
    veth: str
    address: str

    def wrapper(self) -> list[str]:
        """The command prefix that runs a program inside (``ip netns exec`` execs it: same pid)."""
        return ["ip", "netns", "exec", self.name]

    def cut(self) -> None:
        """Cut this host's link to the database (a partition)."""
        _ip("-n", self.name, "link", "set", self.veth, "down")

    def heal(self) -> None:
        """Bring the link back."""
        _ip("-n", self.name, "link", "set", self.veth, "up")


@dataclass
class Lab:
    """A bridge in the root namespace and a namespace per host linked to it."""

    tag: str = field(default_factory=lambda: str(os.getpid()))
    network: ipaddress.IPv4Network | None = None
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    #: Each namespace gets the next address, never one used before in this run (no stale ARP).
    _numbers: itertools.count = field(default_factory=lambda: itertools.count(1))

    @property
    def bridge(self) -> str:
        return f"cpb{self.tag}"

    @property
    def address(self) -> str:
        """The root namespace's address on the bridge: where PostgreSQL listens."""
        assert self.network is not None
        return str(self.network.network_address + 1)

    def open(self) -> "Lab":
        """Make the bridge with a free /24 of ``PREFIX`` (one worker at a time chooses)."""
        remove_leftovers()
        with open("/tmp/cp-netns.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            taken = set(re.findall(rf"inet {re.escape(PREFIX)}\.(\d+)\.", _ip("-4", "-o", "addr").stdout))
            third = next(n for n in range(10, 250) if str(n) not in taken)
            self.network = ipaddress.IPv4Network(f"{PREFIX}.{third}.0/24")
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.address}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        return self

    def add(self, host: str) -> Namespace:
        """A namespace for ``host`` with a veth to the bridge and the next address."""
        assert self.network is not None
        index = next(self._numbers)
        if index > 250:
            raise RuntimeError("this lab has used up its /24")
        name, inside, outside = f"cp{self.tag}-{host}", f"cpn{self.tag}h{index}", f"cpr{self.tag}h{index}"
        address = str(self.network.network_address + 1 + index)
        _ip("netns", "add", name)
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside, "netns", name)
        _ip("link", "set", outside, "master", self.bridge, "up")
        _ip("-n", name, "addr", "add", f"{address}/24", "dev", inside)
        _ip("-n", name, "link", "set", inside, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        namespace = self.namespaces[host] = Namespace(name, inside, address)
        return namespace

    def remove(self, host: str) -> None:
        """Remove ``host``'s namespace (its veth goes with it)."""
        namespace = self.namespaces.pop(host, None)
        if namespace is not None:
            _ip("netns", "del", namespace.name, check=False)

    def close(self) -> None:
        """Remove every namespace and the bridge."""
        for host in list(self.namespaces):
            self.remove(host)
        _ip("link", "del", self.bridge, check=False)
