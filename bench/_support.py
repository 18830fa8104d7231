"""Shared by the bench scripts: an in-process uvicorn server, gateway
processes, figures. Not a benchmark itself.

The scripts put the repository root on sys.path themselves, so they run as
`python bench/<name>.py` from a checkout without installing anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn
from starlette.types import ASGIApp

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serve(app: ASGIApp) -> AsyncIterator[str]:
    """`app` under uvicorn in this event loop on a free loopback port; yields HOST:PORT."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        async with asyncio.timeout(30):
            await task


@dataclass
class GatewayProcess:
    name: str
    port: int
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


@dataclass
class Processes:
    """`python -m gateway.cli ...` processes, all stopped on exit."""

    log_dir: Path
    running: list[GatewayProcess] = field(default_factory=list)

    def start(self, name: str, args: Sequence[str], env: dict[str, str]) -> GatewayProcess:
        port = free_port()
        log_path = self.log_dir / f"{name}.log"
        popen = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", *args, "--port", str(port)],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=log_path.open("wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        process = GatewayProcess(name, port, popen, log_path)
        self.running.append(process)
        return process

    def wait_healthy(self, process: GatewayProcess, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.popen.poll() is not None:
                raise SystemExit(f"{process.name} exited early:\n{process.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(process.http + "/healthz", timeout=1, trust_env=False).is_success:
                    return
            time.sleep(0.2)
        raise SystemExit(f"{process.name} not healthy within {timeout_s:.0f} s")

    def stop_all(self) -> None:
        for process in reversed(self.running):
            if process.popen.poll() is None:
                process.popen.terminate()
                try:
                    process.popen.wait(15)
                except subprocess.TimeoutExpired:
                    process.popen.kill()
                    process.popen.wait(5)


@contextlib.contextmanager
def processes(log_dir: Path) -> Iterator[Processes]:
    running = Processes(log_dir)
    try:
        yield running
    finally:
        running.stop_all()


def machine() -> str:
    """What the figures were measured on, for bench/README.md."""
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )


def quantile_ms(sorted_s: Sequence[float], q: float) -> float:
    """Nearest-rank quantile (0..1) of sorted seconds, in milliseconds."""
    index = max(0, min(len(sorted_s) - 1, int(q * len(sorted_s) + 0.999999) - 1))
    return sorted_s[index] * 1000
