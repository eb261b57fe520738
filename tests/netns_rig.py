"""A multi-host rig on one Linux machine: network namespaces joined by a bridge.

Each "host" is a network namespace with one veth link (``eth0``, address
``10.213.S.i/24``) whose other end sits on a bridge in a namespace of its
own (the switch), so the hosts reach each other only over those links and
nothing of the machine's own network is touched: every link, address and
bridge lives inside a namespace the rig creates, and deleting the
namespaces deletes them all.

MPI reaches the hosts through MPICH Hydra's launcher hook rather than an
sshd per namespace: mpiexec (itself started inside the first host) runs
``-launcher ssh -launcher-exec WRAPPER``, and the wrapper, called like ssh
(``WRAPPER -x HOST COMMAND``), runs COMMAND under ``ip netns exec`` in the
host's namespace with the host's name as its hostname (a UTS namespace of
its own). No keys, no daemons, nothing left listening; what Hydra does
after that (its proxies connecting back to mpiexec over TCP, the ranks'
connections to each other) crosses the rig's links as between machines.
The rig's environment also stops MPICH/UCX from taking the shared-memory
shortcut that processes on one kernel could use (``MPIR_CVAR_NOLOCAL``,
``UCX_TLS=tcp,self``): real hosts have no such path.

Links may be shaped with ``tc`` (a rate with ``tbf``; a delay needs the
kernel's ``netem``, which not every kernel has: :func:`netem_available`).

As a script (root needed)::

    python tests/netns_rig.py up --hosts 3 [--rate 1gbit]   # prints what to export
    python tests/netns_rig.py down                           # removes every pbp rig

The tests use :class:`Rig` through fixtures in tests/test_multihost.py.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PREFIX = "pbprig"          # every namespace the rig creates starts with this
SCRIPT_FOLDER = Path(tempfile.gettempdir()) / f"{PREFIX}-script"   # the `up` command's files


def unavailable() -> str | None:
    """Why the rig cannot run here (not root, no ``ip``, namespaces refused), or None."""
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            return f"no '{tool}' command (apt-get install iproute2 util-linux)"
    probe = f"{PREFIX}probe{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"'ip netns add' refused: {made.stderr.strip()}"
    try:
        for kind in (["veth", "peer", "name", "vb"], ["bridge"]):   # the links the rig makes
            link = _ip("-n", probe, "link", "add", "va", "type", *kind, check=False)
            if link.returncode != 0:
                return f"no {kind[0]} links in this kernel: {link.stderr.strip()}"
            _ip("-n", probe, "link", "del", "va", check=False)
    finally:
        _ip("netns", "del", probe, check=False)
    return None


def netem_available() -> bool:
    """Whether this kernel has the netem queueing discipline (delay, loss)."""
    ns = f"{PREFIX}netem{os.getpid()}"
    _ip("netns", "add", ns)
    try:
        _ip("-n", ns, "link", "set", "lo", "up")
        return subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "lo",
                               "root", "netem", "delay", "1ms"],
                              capture_output=True).returncode == 0
    finally:
        _ip("netns", "del", ns, check=False)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


WRAPPER = """#!/bin/sh
# Called by Hydra as ssh would be: WRAPPER [-x] HOST COMMAND...
while [ "${1#-}" != "$1" ]; do shift; done
host=$1; shift
line=$(grep "^$host " "$(dirname "$0")/hosts.map")
if [ -z "$line" ]; then
    echo "ssh: connect to host $host port 22: Connection timed out" >&2
    exit 255
fi
set -- "$line" "$@"
ns=${1#* }; ns=${ns%% *}; name=${1##* }; shift
if ! ip -n "$ns" link show eth0 | grep -q "state UP"; then    # cut off: as ssh would say
    echo "ssh: connect to host $host port 22: Connection timed out" >&2
    exit 255
fi
exec ip netns exec "$ns" unshare --uts sh -c "hostname $name; exec $*"
"""


class Rig:
    """``hosts`` namespaced hosts on one bridge; ``up`` makes them, ``down`` removes them.

    Host i (1-based) is called ``h{i}``, has address ``self.address(i)`` and
    lives in namespace ``self.namespace(i)``.
    """

    def __init__(self, hosts: int = 3, tag: str | None = None, folder: Path | None = None):
        if not 1 <= hosts <= 200:
            raise ValueError(f"{hosts} hosts: expected 1..200")
        self.hosts = hosts
        self.tag = tag or str(os.getpid())
        subnet = int(self.tag) % 250 + 1 if self.tag.isdigit() else 7
        self.subnet = f"10.213.{subnet}"
        if folder is None:
            self.dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-"))
        else:
            self.dir = folder
            folder.mkdir(parents=True, exist_ok=True)
        self.switch = f"{PREFIX}{self.tag}sw"

    def namespace(self, i: int) -> str:
        return f"{PREFIX}{self.tag}h{i}"

    def address(self, i: int) -> str:
        return f"{self.subnet}.{i}"

    def namespaces(self) -> list[str]:
        return [self.switch, *(self.namespace(i) for i in range(1, self.hosts + 1))]

    def up(self) -> "Rig":
        try:
            _ip("netns", "add", self.switch)
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
            for i in range(1, self.hosts + 1):
                ns = self.namespace(i)
                _ip("netns", "add", ns)
                # Both ends made directly inside their namespaces: nothing in the machine's own.
                _ip("link", "add", "eth0", "netns", ns, "type", "veth",
                    "peer", "name", f"p{i}", "netns", self.switch)
                _ip("-n", self.switch, "link", "set", f"p{i}", "master", "br0", "up")
                _ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", ns, "link", "set", "lo", "up")
            wrapper = self.dir / "launch"
            wrapper.write_text(WRAPPER)
            wrapper.chmod(0o755)
            (self.dir / "hosts.map").write_text("".join(
                f"{self.address(i)} {self.namespace(i)} h{i}\n"
                for i in range(1, self.hosts + 1)))
        except BaseException:
            self.down()
            raise
        return self

    def hostfile(self, hosts: list[int] | None = None, ranks_per_host: int = 1,
                 extra: list[str] = ()) -> Path:
        """A Hydra hostfile (``address:ranks``) of ``hosts`` (default all), plus ``extra`` lines."""
        chosen = hosts or list(range(1, self.hosts + 1))
        path = self.dir / f"hosts-{'-'.join(map(str, chosen))}-{len(extra)}"
        path.write_text("".join(f"{self.address(i)}:{ranks_per_host}\n" for i in chosen)
                        + "".join(f"{line}\n" for line in extra))
        return path

    @property
    def launcher(self) -> str:
        return str(self.dir / "launch")

    def env(self, base: dict | None = None) -> dict:
        """The environment for mpiexec on the rig: Hydra's launcher hook, no shared memory."""
        env = dict(os.environ if base is None else base)
        env.update(HYDRA_LAUNCHER="ssh", HYDRA_LAUNCHER_EXEC=self.launcher,
                   HYDRA_IFACE="eth0", MPIR_CVAR_NOLOCAL="1", UCX_TLS="tcp,self",
                   UCX_NET_DEVICES="eth0",
                   OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
        return env

    def on_host(self, i: int, command: list[str]) -> list[str]:
        """``command`` run on host ``i`` (its namespace and its hostname)."""
        return ["ip", "netns", "exec", self.namespace(i), "unshare", "--uts", "sh", "-c",
                f"hostname h{i}; exec {shlex.join(command)}"]

    def mpiexec(self, mpiexec: str, ranks: int, hostfile: Path, command: list[str],
                options: tuple[str, ...] = ()) -> list[str]:
        """mpiexec started on host 1 over ``hostfile``, its proxies told to call back there."""
        return self.on_host(1, [mpiexec, "-localhost", self.address(1), "-f", str(hostfile),
                                *options, "-n", str(ranks), *command])

    def shape(self, rate: str | None, delay_ms: float | None = None) -> None:
        """Limit every host's outgoing link to ``rate`` (tc syntax) after ``delay_ms``."""
        for i in range(1, self.hosts + 1):
            tc = ["ip", "netns", "exec", self.namespace(i), "tc", "qdisc", "replace", "dev",
                  "eth0", "root"]
            if delay_ms:
                tc += ["netem", "delay", f"{delay_ms}ms"] + (["rate", rate] if rate else [])
            elif rate:
                tc += ["tbf", "rate", rate, "burst", "256kb", "latency", "50ms"]
            else:
                tc = [*tc[:5], "del", *tc[6:]]
            subprocess.run(tc, check=not (rate is None and not delay_ms), capture_output=True)

    def pids(self) -> dict[str, list[int]]:
        """The processes living in the rig's namespaces, by namespace."""
        found = {}
        for ns in self.namespaces():
            listed = _ip("netns", "pids", ns, check=False).stdout.split()
            if listed:
                found[ns] = [int(p) for p in listed]
        return found

    def down(self) -> None:
        """Kill every process in the rig's namespaces and delete them (and their links)."""
        remove(self.namespaces())
        shutil.rmtree(self.dir, ignore_errors=True)


def remove(namespaces: list[str]) -> None:
    """SIGKILL what runs in ``namespaces``, then delete them; waits until they are gone."""
    existing = set(rig_namespaces())
    for ns in namespaces:
        if ns not in existing:
            continue
        for _ in range(50):
            pids = _ip("netns", "pids", ns, check=False).stdout.split()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        _ip("netns", "del", ns, check=False)


def remove_stale() -> None:
    """Remove the rigs of test runs that were killed before their teardown (tag = pid)."""
    stale = []
    for ns in rig_namespaces():
        tag = re.fullmatch(rf"{PREFIX}(\d+)(sw|h\d+)", ns)
        if tag and int(tag[1]) > 1 and not Path(f"/proc/{tag[1]}").exists():
            stale.append(ns)
    remove(stale)


def rig_namespaces() -> list[str]:
    """Every namespace a rig made that still exists."""
    listed = _ip("netns", "list", check=False).stdout.splitlines()
    return [line.split()[0] for line in listed if line.startswith(PREFIX)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="create the hosts and print the variables to use them")
    up.add_argument("--hosts", type=int, default=3)
    up.add_argument("--rate", help="limit each host's link, tc syntax (1gbit, 10gbit)")
    up.add_argument("--delay-ms", type=float, help="add a delay (needs netem in the kernel)")
    sub.add_parser("down", help="kill what runs in every rig namespace and delete them")
    args = parser.parse_args(argv)
    if args.command == "down":
        remove(rig_namespaces())
        shutil.rmtree(SCRIPT_FOLDER, ignore_errors=True)
        return 0
    reason = unavailable()
    if reason:
        print(f"netns_rig: {reason}", file=sys.stderr)
        return 1
    if args.delay_ms and not netem_available():
        print("netns_rig: --delay-ms needs the kernel's netem (CONFIG_NET_SCH_NETEM), which "
              "this kernel lacks; --rate works without it", file=sys.stderr)
        return 1
    rig = Rig(args.hosts, tag="0", folder=SCRIPT_FOLDER).up()
    if args.rate or args.delay_ms:
        rig.shape(args.rate, args.delay_ms)
    hostfile = rig.hostfile()
    env = rig.env({})
    print(f"# {args.hosts} hosts {', '.join(rig.address(i) for i in range(1, rig.hosts + 1))}; "
          f"hostfile {hostfile}")
    print(" ".join(f"export {k}={v};" for k, v in env.items()))
    print(f"ip netns exec {rig.namespace(1)} mpiexec -localhost {rig.address(1)} "
          f"-f {hostfile} -n {rig.hosts} hostname")
    return 0


if __name__ == "__main__":
    sys.exit(main())
