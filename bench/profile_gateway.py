"""Where one `orderpush gateway` process spends its time under load (py-spy).

What it does: starts one gateway on the real Kafka and Redis, pinned to one
core as in bench/side_by_side.py, drives it with the same Go load client on
the other core, and samples the gateway with `py-spy record` (raw collapsed
stacks) while the load runs. It prints the top functions by own time and by
total time, and the share of the main groups (Redis client, aiokafka,
WebSocket writes, hub, ...), as fractions of the samples in which the
process was busy.

    pip install py-spy                       # or: pip install -e '.[bench]'
    python bench/profile_gateway.py --rate 6000 --seconds 15      # steps load
    python bench/profile_gateway.py --connect 5000                # connecting only
    python bench/profile_gateway.py --restart 2000 --seconds 12   # the restarted process

py-spy needs ptrace rights over the gateway (root, or
kernel.yama.ptrace_scope=0). It prints figures; it never passes or fails.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.side_by_side import (
    Server,
    build_loadclient,
    client_argv,
    make_server,
    running,
    wait_for_file,
)

# Stack frames look like "function (path/to/file.py:123)".
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]+?)(?::(?P<line>\d+))?\)$")

#: (group, substring of the frame's file) - the first match wins, leaf first.
GROUPS: list[tuple[str, str]] = [
    ("Redis client (redis-py)", "redis/"),
    ("hiredis", "hiredis"),
    ("aiokafka", "aiokafka/"),
    ("WebSocket protocol (websockets)", "websockets/"),
    ("uvicorn", "uvicorn/"),
    ("starlette", "starlette/"),
    ("msgspec / json", "msgspec"),
    ("gateway/hub.py", "gateway/hub.py"),
    ("gateway/sessions", "gateway/sessions/"),
    ("gateway/endpoint.py", "gateway/endpoint.py"),
    ("gateway/pump.py", "gateway/pump.py"),
    ("gateway (other)", "gateway/"),
    ("PyJWT / crypto", "jwt/"),
    ("uvloop", "uvloop"),
]


#: Frames that only carry others: the event loop, the process's entry point.
_TRANSPARENT = ("asyncio/", "<frozen runpy>", "orderpush/cli.py", "orderpush/serve.py")


def _within(file: str, needle: str) -> bool:
    """py-spy shortens paths to the package ("redis/asyncio/client.py")."""
    return (
        file.startswith(needle)
        or "/" + needle in file
        or (needle.startswith("<") and needle in file)
    )


def group_of(frames: list[tuple[str, str]]) -> str:
    """The innermost frame in a group, looking through the event loop's own
    frames (asyncio streams under redis-py count as redis-py)."""
    for _func, file in reversed(frames):
        if any(_within(file, t) for t in _TRANSPARENT):
            continue
        group = next((g for g, needle in GROUPS if _within(file, needle)), None)
        if group is not None:
            return group
    if any(_within(file, "asyncio/") for _func, file in frames):
        return "asyncio / uvloop (event loop, idle wait included)"
    return "other"


def frame_parts(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip(), ""
    return match["func"], match["file"]


def short(func: str, file: str) -> str:
    marker = "site-packages/"
    if marker in file:
        file = file.split(marker, 1)[1]
    elif "/gateway/" in file:
        file = "gateway/" + file.split("/gateway/", 1)[1]
    return f"{func} ({file})" if file else func


def summarize(raw: str, top: int = 25) -> str:
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    groups: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_parts(f) for f in stack.split(";")]
        frames = [f for f in frames if not f[0].startswith("process ")]
        if not frames:
            continue
        samples += count
        func, file = frames[-1]
        own[short(func, file)] += count
        for name in {short(f, p) for f, p in frames}:
            total[name] += count
        groups[group_of(frames)] += count
    if not samples:
        return "no samples (is py-spy allowed to attach?)"
    out = [f"{samples} busy samples", "", "by group (innermost matching frame):"]
    out += [f"  {100 * n / samples:5.1f}%  {name}" for name, n in groups.most_common()]
    out += ["", f"top {top} by own time:"]
    out += [f"  {100 * n / samples:5.1f}%  {name}" for name, n in own.most_common(top)]
    out += ["", f"top {top} by total time (the function and what it calls):"]
    out += [f"  {100 * n / samples:5.1f}%  {name}" for name, n in total.most_common(top)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=6000, help="messages/s during sampling")
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds of load sampled")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--connect", type=int, default=0, help="profile connecting N users")
    parser.add_argument(
        "--restart",
        type=int,
        default=0,
        help="N users at 200/s; SIGKILL, restart, and profile the new process for --seconds",
    )
    parser.add_argument("--sample-rate", type=int, default=200, help="py-spy samples/s")
    parser.add_argument("--server-core", default="0")
    parser.add_argument("--load-core", default="1")
    parser.add_argument("--kafka", default="127.0.0.1:9092")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--gateway-args", default="")
    parser.add_argument("--raw", help="also keep py-spy's collapsed stacks here")
    args = parser.parse_args()
    args.workers, args.orderpush_env, args.compression = 1, [], "disabled"
    args.nice = 0
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        parser.error("py-spy is not installed: pip install py-spy")
    args.loadclient = build_loadclient()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        server = make_server(args, "orderpush", tmp_path)
        if args.restart:
            profile_restart(args, py_spy, server, tmp_path)
            return
        if args.connect:
            argv = client_argv(args, server, args.connect, "idle")
            argv += ["-hold-s", "1", "-idle-rate", "1", "-idle-s", "1"]
            warmup_s, duration_s = 0.0, None
        else:
            argv = client_argv(args, server, args.users, "steps")
            # A warm-up step, then the sampled one.
            argv += ["-rates", f"1000,{args.rate}", "-step-s", str(args.seconds)]
            argv += ["-stop-p99-ms", "1e9"]
            warmup_s, duration_s = args.seconds + 3.0, args.seconds
        raw_path = Path(args.raw) if args.raw else tmp_path / "profile.txt"
        with running(server):
            assert server.popen is not None
            client = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            time.sleep(warmup_s)
            spy = [py_spy, "record", "-p", str(server.popen.pid), "-f", "raw"]
            spy += ["-r", str(args.sample_rate), "-o", str(raw_path), "--nonblocking"]
            if duration_s is not None:
                spy += ["-d", str(int(duration_s))]
            profiler = subprocess.Popen(spy, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            out, _ = client.communicate(timeout=900)
            if duration_s is None:
                profiler.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
            profiler.wait(120)
        print(out.decode().strip().splitlines()[-1] if out else "(no client result)")
        print(summarize(raw_path.read_text() if raw_path.exists() else ""))


def profile_restart(args: argparse.Namespace, py_spy: str, server: Server, tmp_path: Path) -> None:
    """The restart scenario of bench/side_by_side.py, with py-spy on the
    restarted process from its start (start-up, joining, the reconnect storm)."""
    ready, listen = tmp_path / "ready", tmp_path / "listen"
    argv = client_argv(args, server, args.restart, "restart")
    argv += ["-ready-file", str(ready), "-listen-file", str(listen)]
    argv += ["-restart-rate", "200", "-restart-s", "30", "-drain-s", "30"]
    raw_path = Path(args.raw) if args.raw else tmp_path / "profile.txt"
    with running(server):
        assert server.popen is not None
        client = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        wait_for_file(ready, 300)
        time.sleep(5.0)
        server.kill()
        killed_s = time.monotonic()
        server.start()
        assert server.popen is not None
        spy = [py_spy, "record", "-p", str(server.popen.pid), "-f", "raw", "--nonblocking"]
        spy += ["-r", str(args.sample_rate), "-o", str(raw_path), "-d", str(int(args.seconds))]
        time.sleep(0.2)  # an interpreter to attach to
        profiler = subprocess.Popen(spy, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        listen_ns = server.wait_listening()
        listen.write_text(str(listen_ns))
        print(f"listening {time.monotonic() - killed_s:.2f}s after the kill")
        out, _ = client.communicate(timeout=900)
        profiler.wait(120)
    print(out.decode().strip().splitlines()[-1] if out else "(no client result)")
    print(summarize(raw_path.read_text() if raw_path.exists() else ""))


if __name__ == "__main__":
    main()
