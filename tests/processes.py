"""Orderpush commands as real processes (`python -m gateway.cli ...`), for
tests of the distributed setup. Every process is stopped at the end."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.server import free_port

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Process:
    name: str
    port: int
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@dataclass
class Cluster:
    processes: list[Process] = field(default_factory=list)

    def start(self, name: str, args: Sequence[str], env: dict[str, str], log_dir: Path) -> Process:
        port = free_port()
        log_path = log_dir / f"{name}.log"
        popen = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", *args, "--port", str(port)],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=log_path.open("wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        process = Process(name, port, popen, log_path)
        self.processes.append(process)
        return process

    def wait_healthy(self, process: Process, path: str = "/healthz", timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.popen.poll() is not None:
                raise AssertionError(f"{process.name} exited early:\n{process.log()}")
            try:
                if httpx.get(process.http + path, timeout=1).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{process.name} not healthy in {timeout_s}s:\n{process.log()}")

    def stop(self, process: Process, timeout_s: float = 15) -> None:
        if process.popen.poll() is None:
            process.popen.terminate()
            try:
                process.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait(5)

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            self.stop(process)


@contextmanager
def cluster() -> Iterator[Cluster]:
    running = Cluster()
    try:
        yield running
    finally:
        running.stop_all()
