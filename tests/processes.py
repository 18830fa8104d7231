"""Orderpush commands as real processes (`python -m orderpush ...`), for
tests of the distributed setup. Every process is stopped at the end."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness import ROOT, free_port

# -- private servers, for fault tests -----------------------------------------
#
# Fault tests pause, kill and restart servers; they do that only to servers of
# their own, on free ports with their own run dir, never to the shared ones
# (`make services`, 9092 and 6379) that other tests use at the same time.

SERVICES_SH = ROOT / "scripts" / "services.sh"


def _owned_pid(pidfile: Path, marker: str) -> int:
    """The pid in `pidfile`, checked to be a live process whose command line
    names `marker` (our run dir or port): a signal never reaches a stranger."""
    pid = int(pidfile.read_text().strip())
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    if marker not in cmdline:
        raise AssertionError(f"pid {pid} from {pidfile} is not ours: {cmdline[:200]}")
    return pid


def _wait_gone(pid: int, timeout_s: float) -> None:
    """Until `pid` exited (a zombie counts as exited: nothing runs any more)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} still running after {timeout_s}s")


@dataclass
class PrivateKafka:
    """A single-node Kafka of one test module, started by scripts/services.sh
    on free ports in its own run dir. Its data survives `kill` + `start`
    (ORDERPUSH_KAFKA_KEEP_DATA), like a broker that crashed and came back."""

    run_dir: Path
    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _script(self, command: str, timeout_s: float, keep_data: bool = True) -> None:
        env = {
            **os.environ,
            "ORDERPUSH_RUN_DIR": str(self.run_dir),
            "ORDERPUSH_KAFKA_PORT": str(self.port),
            "ORDERPUSH_KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "ORDERPUSH_KAFKA_KEEP_DATA": "1" if keep_data else "0",
            "ORDERPUSH_START_TIMEOUT": str(int(timeout_s)),
            "ORDERPUSH_PYTHON": sys.executable,
        }
        done = subprocess.run(
            ["bash", str(SERVICES_SH), command, "kafka"],
            env=env,
            capture_output=True,
            timeout=timeout_s + 30,
        )
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")[-4000:]
            raise AssertionError(f"services.sh {command} kafka failed:\n{output}")

    def start(self, timeout_s: float = 90) -> None:
        """Start (or restart on the same data) and wait until it serves."""
        self._script("start", timeout_s)

    def pid(self) -> int:
        return _owned_pid(self.run_dir / "kafka.pid", str(self.run_dir))

    def running(self) -> bool:
        try:
            pid = self.pid()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ValueError, AssertionError):
            return False
        return state not in ("Z", "X")

    def pause(self) -> None:
        """SIGSTOP: the broker hangs, its sockets stay open and answer nothing."""
        os.kill(self.pid(), signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid(), signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL, like a crash: no clean shutdown, the data dir stays."""
        pid = self.pid()
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, 10)

    def stop(self) -> None:
        """Stop for good and wipe the data."""
        with contextlib.suppress(FileNotFoundError, AssertionError, ValueError):
            os.kill(self.pid(), signal.SIGCONT)  # a paused broker cannot stop
        self._script("stop", 60, keep_data=False)


@dataclass
class PrivateRedis:
    """A redis-server child process on a free port with its own directory.
    With `persistent`, every write goes to an append-only file first, so a
    SIGKILL + `start` brings back all the data (a crash of a durable Redis)."""

    data_dir: Path
    persistent: bool = True
    port: int = field(default_factory=free_port)
    popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 15) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        durability = ["--appendonly", "yes", "--appendfsync", "always"]
        args = [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            *(durability if self.persistent else ["--appendonly", "no"]),
            "--logfile",
            str(self.data_dir / "redis.log"),
        ]
        self.popen = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise AssertionError(f"redis-server exited: {self._log()}")
            if self._ping():
                return
            time.sleep(0.05)
        raise AssertionError(f"redis-server not answering in {timeout_s}s: {self._log()}")

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _log(self) -> str:
        path = self.data_dir / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def pause(self) -> None:
        """SIGSTOP: Redis hangs, its sockets stay open and answer nothing."""
        assert self.popen is not None and self.popen.poll() is None
        self.popen.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.popen is not None
        self.popen.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL, like a crash; with `persistent`, the data is in the AOF."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGCONT)
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)

    @contextlib.contextmanager
    def running(self) -> Iterator[PrivateRedis]:
        """Started for the `with` block, stopped after it whatever happens."""
        try:
            self.start()
            yield self
        finally:
            self.stop()
