"""Running Orderpush to measure or test it: in this event loop under uvicorn,
or as `python -m orderpush ...` processes on free loopback ports.

Shared by the test suite and the bench scripts, so both drive the system the
same way. Every process started here is stopped when its `cluster()` ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
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


def free_ports(count: int) -> int:
    """The first of `count` consecutive free ports (the admin listeners of
    `--workers N` are on port + K)."""
    for _ in range(100):
        first = free_port()
        with contextlib.ExitStack() as held:
            try:
                for port in range(first, first + count):
                    sock = held.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return first
    raise OSError(f"no {count} consecutive free ports")


@contextlib.asynccontextmanager
async def serve(
    app: ASGIApp,
    *,
    ws_max_size: int = 64 * 1024,
    log_level: str = "warning",
    ws_deflate: bool = False,
) -> AsyncIterator[str]:
    """Run `app` under uvicorn in this event loop, configured as `orderpush
    gateway` runs it (websockets-sansio, no permessage-deflate unless asked,
    so event frames take the direct path); yields "127.0.0.1:PORT"."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level=log_level,
        ws_max_size=ws_max_size,
        ws="websockets-sansio",
        ws_per_message_deflate=ws_deflate,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:
                if task.done():
                    task.result()  # re-raise the reason it died
                await asyncio.sleep(0.02)
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        async with asyncio.timeout(30):
            await task


@dataclass
class Process:
    """One `orderpush` command running on a free port."""

    name: str
    port: int
    popen: subprocess.Popen[bytes]
    log_path: Path
    #: The admin listener's port (`gateway` and `demo`), or None.
    admin_port: int | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin(self) -> str:
        """Base URL of /metrics, /api/stats and /operator (the admin listener)."""
        assert self.admin_port is not None, f"{self.name} has no admin listener"
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@dataclass
class Cluster:
    processes: list[Process] = field(default_factory=list)

    def start(
        self,
        name: str,
        args: Sequence[str],
        env: dict[str, str],
        log_dir: Path,
        *,
        port: int | None = None,
    ) -> Process:
        """`python -m orderpush ARGS --port FREE` (or `port`: a restart on the
        same address), its output in LOG_DIR/NAME.log."""
        port = port if port is not None else free_port()
        log_path = log_dir / f"{name}.log"
        # Each gateway gets its own admin port (the default, 9000, is one per host).
        workers = int(args[args.index("--workers") + 1]) if "--workers" in args else 1
        admin_port = free_ports(workers) if args and args[0] in ("gateway", "demo") else None
        admin = ["--admin-port", str(admin_port)] if admin_port is not None else []
        popen = subprocess.Popen(
            [sys.executable, "-m", "orderpush", *args, "--port", str(port), *admin],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=log_path.open("wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        process = Process(name, port, popen, log_path, admin_port)
        self.processes.append(process)
        return process

    def wait_healthy(self, process: Process, path: str = "/healthz", timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.popen.poll() is not None:
                raise AssertionError(f"{process.name} exited early:\n{process.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(process.http + path, timeout=1, trust_env=False).status_code < 500:
                    return
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


@contextlib.contextmanager
def cluster() -> Iterator[Cluster]:
    running = Cluster()
    try:
        yield running
    finally:
        running.stop_all()
