"""`orderpush gateway --workers N`: N gateway processes serving one port.

One Python process uses one core. With `--workers N` the command starts N
worker processes (spawned, so none inherits another's event loop, Kafka or
Redis connections), each a complete gateway instance: its own consumer group
member and its own instance id, `INSTANCE_ID-wK` for K = 0..N-1 (stable
across restarts, so a restarted worker takes over its own Redis leases).
Each worker binds the port with SO_REUSEPORT and the kernel spreads new
connections over the N listeners. A user's sockets may land on different
workers; events reach them through the session store as between separate
instances.

The parent process only supervises: SIGTERM is passed on to every worker
(each drains as a single gateway does); SIGINT reaches the workers directly
from the terminal. If a worker exits with an error, the others are stopped
and the command exits with that worker's status, so an orchestrator sees one
failing unit instead of a gateway quietly serving with fewer workers.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
from types import FrameType

from gateway.settings import Settings

log = logging.getLogger("orderpush.workers")

#: After SIGTERM, how long the workers get to drain before they are killed.
STOP_GRACE_S = 60.0


def worker_instance_id(instance_id: str, index: int) -> str:
    return f"{instance_id}-w{index}"


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A listening socket that other workers can bind too (Linux spreads
    connections over them)."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise OSError("--workers needs SO_REUSEPORT (Linux)")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


def _worker(index: int, args: argparse.Namespace, settings: Settings) -> None:
    """One worker process: a whole gateway on the shared port."""
    from orderpush.serve import serve_command

    logging.basicConfig(
        level=args.log_level.upper(),
        format=f"%(asctime)s %(levelname)s [w{index}] %(name)s: %(message)s",
    )
    _die_with_parent()
    mine = settings.with_overrides(
        instance_id=worker_instance_id(settings.instance_id, index),
        # Each worker has its own figures: its admin listener is on port + index.
        admin_port=None if settings.admin_port is None else settings.admin_port + index,
    ).validated()
    sock = reuseport_socket(args.host, args.port)
    sys.exit(serve_command(args, mine, sockets=[sock]))


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the parent dies (even by SIGKILL), so
    no orphan keeps serving the port after its supervisor is gone."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def serve_workers(args: argparse.Namespace, settings: Settings) -> int:
    count = int(args.workers)
    # Fail here, in the parent, if the port is taken by something else.
    reuseport_socket(args.host, args.port).close()
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_worker, args=(k, args, settings), name=f"orderpush-gateway-w{k}")
        for k in range(count)
    ]
    stopping = False

    def stop_all(sig: int, frame: FrameType | None = None) -> None:
        nonlocal stopping
        stopping = True
        for process in workers:
            if process.pid is not None and process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, sig)

    previous_term = signal.signal(signal.SIGTERM, stop_all)
    # Ctrl-C in a terminal reaches every process of the group by itself;
    # passing it on would count as a second signal (stop without draining).
    previous_int = signal.signal(signal.SIGINT, lambda sig, frame: None)
    try:
        for process in workers:
            process.start()
        log.info(
            "%d gateway workers on %s:%d: %s",
            count,
            args.host,
            args.port,
            ", ".join(worker_instance_id(settings.instance_id, k) for k in range(count)),
        )
        status = 0
        running = list(workers)
        while running:
            ready = multiprocessing.connection.wait([p.sentinel for p in running])
            for process in [p for p in running if p.sentinel in ready]:
                process.join()
                running.remove(process)
                code = process.exitcode or 0
                if code != 0 and not stopping:
                    log.error("%s exited with %s; stopping the others", process.name, code)
                    status = code if code > 0 else 1
                    stop_all(signal.SIGTERM)
        return status
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)
        for process in workers:
            if process.exitcode is None and process.pid is not None:
                process.join(STOP_GRACE_S)
                if process.exitcode is None:
                    process.kill()
                    process.join(5)
