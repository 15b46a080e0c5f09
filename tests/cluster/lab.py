"""Hosts made of Linux network namespaces, for the multi-host test and benchmark.

Each host is a network namespace with one veth link to a bridge in a switch namespace of
its own (nothing is added to the machine's own network; traffic never leaves the bridge),
an address 10.231.0.<n>/24 and a private DATA_DIR; they share only what real hosts would:
the artifact store directory (NFS in real life) and the base model folder (in the image).
Processes are started in a namespace with `ip netns exec`, each in its own process group;
`Lab.close` kills them all and deletes the namespaces and the temporary folder.
Needs root and iproute2.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUBNET = "10.231.0"
PG_BIN = (
    sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
    if os.path.isdir("/usr/lib/postgresql")
    else Path("/usr/bin")
)


def lab_available() -> str:
    """Why the lab cannot run here ('' when it can)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if not shutil.which("ip"):
        return "needs iproute2 (ip)"
    if not (PG_BIN / "postgres").exists() or not shutil.which("redis-server"):
        return "needs PostgreSQL and redis-server binaries"
    return ""


def sh(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True)


def _netns_delete(name: str) -> None:
    """Delete a namespace; retried while its last processes are still exiting."""
    for _ in range(20):
        done = subprocess.run(["ip", "netns", "del", name], capture_output=True, text=True)
        if done.returncode == 0 or "No such file" in done.stderr:
            return
        time.sleep(0.5)
    raise RuntimeError(f"could not delete network namespace {name}: {done.stderr}")


@dataclass
class Host:
    name: str
    netns: str
    address: str
    data_dir: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        """What is this host's own: its data folder and its artifact cache."""
        return {
            "DATA_DIR": str(self.data_dir),
            "ARTIFACT_CACHE_DIR": str(self.data_dir / "artifact-cache"),
        }


@dataclass
class Lab:
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="cluster-lab-")))
    hosts: dict[str, Host] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def switch(self) -> str:
        return f"cl{self.tag}-sw"

    def open(self) -> "Lab":
        sh("ip", "netns", "add", self.switch)
        sh("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.switch, "link", "set", "br0", "up")
        (self.tmp / "store").mkdir()
        return self

    def host(self, name: str, number: int) -> Host:
        """A namespace with address SUBNET.<number>, wired to the bridge."""
        netns = f"cl{self.tag}-{name}"
        sh("ip", "netns", "add", netns)
        outer, inner = f"v{self.tag}{number}", f"h{self.tag}{number}"
        sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
        sh("ip", "link", "set", outer, "netns", self.switch)
        sh("ip", "link", "set", inner, "netns", netns)
        sh("ip", "-n", self.switch, "link", "set", outer, "master", "br0", "up")
        sh("ip", "-n", netns, "link", "set", inner, "name", "eth0")
        sh("ip", "-n", netns, "addr", "add", f"{SUBNET}.{number}/24", "dev", "eth0")
        sh("ip", "-n", netns, "link", "set", "eth0", "up")
        sh("ip", "-n", netns, "link", "set", "lo", "up")
        data_dir = self.tmp / "hosts" / name
        data_dir.mkdir(parents=True)
        host = Host(name, netns, f"{SUBNET}.{number}", data_dir)
        self.hosts[name] = host
        return host

    def start(
        self, host: Host, role: str, command: list[str], *, env: dict | None = None, user: str = ""
    ) -> subprocess.Popen:
        """Run `command` in the host's namespace (its own process group), logging to
        <DATA_DIR>/<role>.log."""
        prefix = ["ip", "netns", "exec", host.netns]
        if user:
            prefix += ["runuser", "-u", user, "--"]
        with open(host.data_dir / f"{role}.log", "ab") as log:
            proc = subprocess.Popen(
                prefix + command,
                cwd=ROOT,
                env={**os.environ, **self.env, **host.env(), **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        host.procs[role] = proc
        return proc

    def run(self, host: Host, command: list[str], *, env: dict | None = None, timeout=300) -> str:
        """Run to completion in the host's namespace; its output, or an error with it."""
        done = subprocess.run(
            ["ip", "netns", "exec", host.netns, *command],
            cwd=ROOT,
            env={**os.environ, **self.env, **host.env(), **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode:
            raise RuntimeError(f"{command} on {host.name} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def manage(self, host: Host, *args: str, **kwargs) -> str:
        return self.run(host, [sys.executable, "manage.py", *args], **kwargs)

    def kill(self, host: Host, role: str, sig: int = signal.SIGKILL) -> None:
        proc = host.procs.pop(role, None)
        if proc is None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def close(self) -> None:
        for host in self.hosts.values():
            for role in list(host.procs):
                self.kill(host, role)
            # Anything left in the namespace (children that left the group) goes too.
            pids = subprocess.run(
                ["ip", "netns", "pids", host.netns], capture_output=True, text=True
            ).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            _netns_delete(host.netns)
        _netns_delete(self.switch)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # --- the data host ----------------------------------------------------------------

    def data_start(self, host: Host) -> None:
        """PostgreSQL and Redis bound to the data host's address (trust on the lab subnet)."""
        for folder in (self.tmp, self.tmp / "hosts"):
            folder.chmod(0o711)  # PostgreSQL runs as its own user: let it reach its folder
        pg = host.data_dir / "pg"
        pg.mkdir()
        shutil.chown(pg, "postgres", "postgres")
        shutil.chown(host.data_dir, "postgres", "postgres")
        initdb = subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(PG_BIN / "initdb"),
                "-D",
                str(pg),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
            capture_output=True,
            text=True,
        )
        if initdb.returncode:
            raise RuntimeError(f"initdb failed: {initdb.stdout}{initdb.stderr}")
        with open(pg / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {SUBNET}.0/24 trust\n")
        self.start(
            host,
            "postgres",
            [
                str(PG_BIN / "postgres"),
                "-D",
                str(pg),
                "-c",
                f"listen_addresses={host.address}",
                "-c",
                f"unix_socket_directories={pg}",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "max_connections=200",
            ],
            user="postgres",
        )
        self.start(
            host,
            "redis",
            [
                "redis-server",
                "--bind",
                host.address,
                "--port",
                "6379",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ],
        )
        deadline = time.monotonic() + 60
        while True:
            ready = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    host.netns,
                    str(PG_BIN / "pg_isready"),
                    "-h",
                    host.address,
                    "-q",
                ],
            )
            if ready.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("PostgreSQL on the data host did not start")
            time.sleep(0.3)
        self.run(host, [str(PG_BIN / "createdb"), "-h", host.address, "-U", "postgres", "chatbot"])


def http_wait(lab: Lab, client: Host, url: str, *, timeout: float = 180) -> None:
    """Block until `url` answers from the client host's namespace (any HTTP status)."""
    deadline = time.monotonic() + timeout
    probe = (
        "import sys, urllib.request, urllib.error\n"
        "try:\n urllib.request.urlopen(sys.argv[1], timeout=2)\n"
        "except urllib.error.HTTPError:\n pass\n"
    )
    while time.monotonic() < deadline:
        done = subprocess.run(
            ["ip", "netns", "exec", client.netns, sys.executable, "-c", probe, url],
            capture_output=True,
        )
        if done.returncode == 0:
            return
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout:g} s")
