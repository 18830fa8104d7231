"""Side by side: Orderpush (Kafka + Redis), python-socketio (AsyncRedisManager) and
Centrifugo v6 (Redis engine) under the same load client with the same methodology
(issue 7).

Methodology, the same for every system:

- The server under test runs alone on one core (`taskset -c --server-core`):
  Orderpush as `orderpush gateway` process(es) on the real Kafka and Redis
  (`make services`), python-socketio as `bench/socketio_server.py` on Redis,
  Centrifugo as its own binary (`bench/centrifugo/build.sh`, config
  `bench/centrifugo/config.yaml`) with the Redis engine.
  Kafka and Redis themselves are shared services and are not pinned.
- One compiled load client (`bench/loadclient`, Go) on the other core
  (`taskset -c --load-core`) connects the users and produces the messages
  the way each system takes them in: Orderpush, order events to Kafka
  (franz-go producer, linger 1 ms, acks=all); python-socketio, the
  manager's "emit" messages published on Redis, pipelined per 1 ms tick;
  Centrifugo, "publish" commands to its server HTTP API, one /api/batch
  request per 1 ms tick, into the user's personal channel (a server-side
  subscription with history in Redis). Every message is personal
  (one user, one connection), stamped with its send time; the client counts
  lost, duplicated and wrong-user messages and the send -> receive latency.
- Each run starts fresh servers (their own topic prefix, Redis keys and
  channel). Each figure is the median of `--runs` runs; the 1-minute load
  average is recorded beside each run, since the machine is shared.

Scenarios (a column each in the table):

- steps: 1,000 users; stepped rates of personal messages, 10 s each; a step
  counts when nothing is lost. Highest rate with p99 <= 50 ms, highest with
  p99 <= 500 ms ("keeps up"), p50 at 1,000/s and at 4,000/s.
- idle: 5,000 users connect (time until all are authenticated and, for
  Orderpush, snapshotted), RSS per idle connection ((RSS with 5,000 idle
  connections - RSS before) / 5,000, all server processes), then 500/s for
  30 s over those 5,000 users: p99 (no stall from lease or housekeeping work).
- restart: 2,000 users, 200/s; the server is killed (SIGKILL) and started
  again at once; from the moment it listens again, how long until every
  client is reconnected and holds every message sent before that moment,
  and how many messages were lost. Clients resume where they were:
  Orderpush with its cursor, Centrifugo by recovering its subscription from
  the last offset and epoch (history in Redis outlives the process);
  python-socketio has no such thing.

Run it (needs `make services`, Go, `pip install python-socketio`; Centrifugo is
built from the Go module proxy on first use, a few minutes):

    python bench/side_by_side.py                       # everything, 3 runs
    python bench/side_by_side.py --systems orderpush --scenarios steps --runs 1
    python bench/side_by_side.py --systems centrifugo --runs 1
    python bench/side_by_side.py --workers 2 --server-core 0,1   # --workers N

It prints a Markdown table (and with --json FILE writes every run's raw
figures). It never passes or fails on timing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._support import ROOT, machine
from tests.harness import free_port

LOADCLIENT_DIR = ROOT / "bench" / "loadclient"
CENTRIFUGO_DIR = ROOT / "bench" / "centrifugo"
SECRET = "side-by-side-bench-secret-0123456789abcdef"
SYSTEMS = ("orderpush", "socketio", "centrifugo")
SCENARIOS = ("steps", "idle", "restart")
LABELS = {
    "orderpush": "Orderpush (Kafka + Redis)",
    "socketio": "python-socketio + AsyncRedisManager",
    "centrifugo": "Centrifugo v6 + Redis engine",
}
# Centrifugo's personal channels: NAMESPACE:#USER (bench/centrifugo/config.yaml).
CENTRIFUGO_NAMESPACE = "personal"


def build_loadclient() -> Path:
    """`go build` the load client (cached by Go; fast when nothing changed)."""
    binary = LOADCLIENT_DIR / "loadclient"
    subprocess.run(
        ["go", "build", "-o", str(binary), "."], cwd=LOADCLIENT_DIR, check=True, timeout=600
    )
    return binary


def build_centrifugo() -> Path:
    """`bench/centrifugo/build.sh`: builds Centrifugo from the Go module proxy
    once (minutes), then reuses the binary; its last line is the path."""
    out = subprocess.run(
        ["bash", str(CENTRIFUGO_DIR / "build.sh")],
        check=True,
        timeout=1800,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    return Path(out.strip().splitlines()[-1])


# ---- servers under test -------------------------------------------------------


@dataclass
class Server:
    system: str
    port: int
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    kafka_topic: str = ""
    channel: str = ""
    popen: subprocess.Popen[bytes] | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        # A session of its own, so the kill reaches every worker process.
        self.popen = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env={**os.environ, **self.env},
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def pids(self) -> list[int]:
        """The server's processes: the one started and its descendants."""
        assert self.popen is not None
        found = [self.popen.pid]
        for pid in found:
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{pid}/task").iterdir():
                    children = (task / "children").read_text().split()
                    found.extend(int(c) for c in children if int(c) not in found)
        return found

    def cpu_s(self) -> float:
        """CPU seconds (user + system) used so far by the server's processes."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / ticks

    def rss_kib(self) -> int:
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        return total

    def wait_listening(self, timeout_s: float = 90.0) -> int:
        """Until the port accepts; returns the time it did (unix ns)."""
        deadline = time.monotonic() + timeout_s
        assert self.popen is not None
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.system} exited:\n{self.log_tail()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return time.time_ns()
            time.sleep(0.01)
        raise RuntimeError(f"{self.system} not listening in {timeout_s}s:\n{self.log_tail()}")

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Listening, and for Orderpush its consumer holds partitions."""
        self.wait_listening(timeout_s)
        if self.system != "orderpush":
            return
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                url = f"http://127.0.0.1:{self.port}/readyz"
                if httpx.get(url, timeout=1, trust_env=False).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"orderpush not ready in {timeout_s}s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL to the server's own process group (all its workers)."""
        if self.popen is None or self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(15)

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


def priority(args: argparse.Namespace) -> list[str]:
    """`nice -n N` for the server and the load client (negative: ahead of the
    other work on a shared machine; needs root). The same for every system."""
    nice = getattr(args, "nice", 0)
    return ["nice", "-n", str(nice)] if nice else []


def make_server(args: argparse.Namespace, system: str, logs: Path) -> Server:
    run = uuid.uuid4().hex[:8]
    port = free_port()
    pin = [*priority(args), "taskset", "-c", args.server_core]
    log_path = logs / f"{system}-{run}.log"
    if system == "orderpush":
        prefix = f"sbs{run}."
        argv = [
            *pin,
            sys.executable,
            "-m",
            "orderpush",
            "gateway",
            "--port",
            str(port),
            "--bus",
            f"kafka://{args.kafka}",
            "--sessions",
            args.redis_url,
            "--topic-prefix",
            prefix,
            "--instance-id",
            f"sbs-{run}",
            "--log-level",
            "warning",
        ]
        if args.workers > 1:
            argv += ["--workers", str(args.workers)]
        argv += args.gateway_args.split()
        env = {
            "ORDERPUSH_JWT_SECRET": SECRET,
            "ORDERPUSH_SESSION_KEY_PREFIX": f"sbs{run}",
            # Its own admin listener port (worker K: + K), away from others' gateways.
            "ORDERPUSH_ADMIN_PORT": str(free_port()),
        }
        env.update(dict(kv.split("=", 1) for kv in args.orderpush_env))
        return Server(system, port, argv, env, log_path, kafka_topic=f"{prefix}orders")
    if system == "centrifugo":
        api_key = uuid.uuid4().hex
        argv = [*pin, str(args.centrifugo), "--config", str(CENTRIFUGO_DIR / "config.yaml")]
        env = {
            "CENTRIFUGO_HTTP_SERVER_PORT": str(port),
            "CENTRIFUGO_ENGINE_REDIS_ADDRESS": args.redis_url,
            "CENTRIFUGO_ENGINE_REDIS_PREFIX": f"cfg{run}",
            "CENTRIFUGO_CLIENT_TOKEN_HMAC_SECRET_KEY": SECRET,
            "CENTRIFUGO_HTTP_API_KEY": api_key,
        }
        return Server(system, port, argv, env, log_path, extra={"api_key": api_key})
    channel = f"sbs-{run}"
    argv = [
        *pin,
        sys.executable,
        str(ROOT / "bench" / "socketio_server.py"),
        "--port",
        str(port),
        "--redis",
        args.redis_url,
        "--channel",
        channel,
        "--secret",
        SECRET,
    ]
    return Server(system, port, argv, {}, log_path, channel=channel)


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    server.start()
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


# ---- the load client ---------------------------------------------------------


def client_argv(args: argparse.Namespace, server: Server, users: int, mode: str) -> list[str]:
    path = {"orderpush": "/ws", "centrifugo": "/connection/websocket"}.get(server.system, "")
    url = f"ws://127.0.0.1:{server.port}{path}"
    redis_hostport = args.redis_url.split("//", 1)[1].split("/", 1)[0]
    centrifugo = (
        [
            "-api",
            f"http://127.0.0.1:{server.port}/api/batch",
            "-api-key",
            server.extra["api_key"],
            "-namespace",
            CENTRIFUGO_NAMESPACE,
        ]
        if server.system == "centrifugo"
        else []
    )
    return [
        *priority(args),
        "taskset",
        "-c",
        args.load_core,
        str(args.loadclient),
        "-system",
        server.system,
        "-url",
        url,
        "-secret",
        SECRET,
        "-users",
        str(users),
        "-user-prefix",
        f"u{uuid.uuid4().hex[:6]}-",
        "-kafka",
        args.kafka,
        "-topic",
        server.kafka_topic or "unused",
        "-redis",
        redis_hostport,
        "-channel",
        server.channel or "unused",
        "-mode",
        mode,
        "-compression",
        args.compression,
        *centrifugo,
    ]


def run_client(argv: list[str], timeout_s: float, during: Callable[[], None] | None = None) -> Any:
    """Run the load client; `during` runs in this process meanwhile."""
    with tempfile.TemporaryFile() as out:
        client = subprocess.Popen(argv, stdout=out, stderr=sys.stderr, stdin=subprocess.DEVNULL)
        try:
            if during is not None:
                during()
            client.wait(timeout_s)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait(10)
        out.seek(0)
        text = out.read().decode()
    lines = [line for line in text.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"load client printed no result (exit {client.returncode})")
    return json.loads(lines[-1])


def wait_for_file(path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} did not appear in {timeout_s}s")
        time.sleep(0.05)


# ---- scenarios -----------------------------------------------------------------


def scenario_steps(args: argparse.Namespace, server: Server) -> dict[str, Any]:
    argv = client_argv(args, server, args.users, "steps")
    argv += ["-rates", args.rates, "-step-s", str(args.step_s), "-drain-s", "10"]
    with running(server):
        result = run_client(argv, timeout_s=1800)
    steps = result.get("steps", [])
    clean = [s for s in steps if s["lost"] == 0 and s["duplicated"] == 0 and s["wrong_user"] == 0]
    by_rate = {s["rate"]: s for s in steps}
    return {
        "rate_p99_50ms": max((s["rate"] for s in clean if s["p99_ms"] <= 50), default=0),
        "rate_p99_500ms": max((s["rate"] for s in clean if s["p99_ms"] <= 500), default=0),
        "p50_at_4000_ms": by_rate.get(4000, {}).get("p50_ms"),
        "p50_at_1000_ms": by_rate.get(1000, {}).get("p50_ms"),
        "produce_errors": result.get("produce_errors"),
        "steps": steps,
    }


def scenario_idle(args: argparse.Namespace, server: Server) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        ready = Path(tmp) / "ready"
        argv = client_argv(args, server, args.idle_users, "idle")
        argv += [
            "-ready-file",
            str(ready),
            "-hold-s",
            "4",
            "-idle-rate",
            "500",
            "-idle-s",
            str(args.idle_traffic_s),
        ]
        argv += ["-connect-concurrency", str(args.connect_concurrency)]
        figures: dict[str, Any] = {}
        with running(server):
            time.sleep(1.0)
            figures["rss_before_kib"] = server.rss_kib()

            def sample() -> None:
                cpu_before_s = server.cpu_s()
                wait_for_file(ready, 300)
                # CPU, not wall time: on a shared machine the wall time of the
                # connects also measures the other work on the server's core.
                figures["connect_cpu_s"] = round(server.cpu_s() - cpu_before_s, 2)
                time.sleep(3.0)  # settled: every handshake's garbage collected
                figures["rss_idle_kib"] = server.rss_kib()

            result = run_client(argv, timeout_s=600, during=sample)
    per_conn = (figures["rss_idle_kib"] - figures["rss_before_kib"]) / args.idle_users
    traffic = result.get("traffic", {})
    return {
        "connect_s": result.get("connect_s"),
        "rss_per_idle_conn_kib": round(per_conn, 1),
        "idle_p99_at_500_ms": traffic.get("p99_ms"),
        "idle_lost": traffic.get("lost"),
        **figures,
        "traffic": traffic,
    }


def scenario_restart(args: argparse.Namespace, server: Server) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        ready, listen = Path(tmp) / "ready", Path(tmp) / "listen"
        argv = client_argv(args, server, args.restart_users, "restart")
        argv += ["-ready-file", str(ready), "-listen-file", str(listen)]
        argv += ["-restart-rate", "200", "-restart-s", "30", "-drain-s", "30"]
        figures: dict[str, Any] = {}
        server.start()
        try:
            server.wait_ready()

            def kill_and_restart() -> None:
                wait_for_file(ready, 300)
                time.sleep(5.0)
                server.kill()
                killed_ns = time.time_ns()
                server.start()
                listen_ns = server.wait_listening()
                listen.write_text(str(listen_ns))
                figures["down_s"] = round((listen_ns - killed_ns) / 1e9, 3)
                if server.system == "orderpush":
                    # When its consumer holds partitions again (/readyz 200):
                    # live events flow from then on.
                    server.wait_ready()
                    figures["ready_after_listen_s"] = round((time.time_ns() - listen_ns) / 1e9, 3)

            result = run_client(argv, timeout_s=600, during=kill_and_restart)
        finally:
            server.stop()
    restart = result.get("restart", {})
    traffic = result.get("traffic", {})
    return {
        "all_current_s": restart.get("all_current_after_listen_s"),
        "lost": traffic.get("lost"),
        "duplicated": traffic.get("duplicated"),
        "not_reconnected": restart.get("not_reconnected"),
        "produce_errors": result.get("produce_errors"),
        **figures,
        "restart": restart,
    }


RUNNERS = {"steps": scenario_steps, "idle": scenario_idle, "restart": scenario_restart}


# ---- the table -------------------------------------------------------------------


def median(values: list[Any]) -> Any:
    numbers = [v for v in values if isinstance(v, int | float)]
    if not numbers:
        return None
    return statistics.median(numbers)


COLUMNS: list[tuple[str, str, str]] = [
    ("steps", "rate_p99_50ms", "highest rate with p99 <= 50 ms and nothing lost (/s)"),
    ("steps", "rate_p99_500ms", "keeps up: highest rate with p99 <= 500 ms (/s)"),
    ("steps", "p50_at_4000_ms", "p50 at 4,000/s (ms)"),
    ("steps", "p50_at_1000_ms", "p50 at 1,000/s (ms)"),
    ("idle", "rss_per_idle_conn_kib", "RSS per idle connection, 5,000 (KiB)"),
    ("idle", "connect_s", "5,000 clients connected in (s)"),
    ("idle", "connect_cpu_s", "... server CPU for those connects (s)"),
    ("idle", "idle_p99_at_500_ms", "p99 at 500/s with 5,000 idle users (ms)"),
    ("restart", "all_current_s", "killed and restarted, 2,000 clients: all current after (s)"),
    ("restart", "lost", "... messages lost"),
]


Results = dict[str, dict[str, list[dict[str, Any]]]]  # label -> scenario -> runs


def cell(runs: list[dict[str, Any]], key: str) -> str:
    values = [r.get(key) for r in runs]
    med = median(values)
    if med is None:
        return "-"
    shown = " / ".join("-" if v is None else f"{v:g}" for v in values)
    return f"**{med:g}** ({shown})"


def table(results: Results) -> str:
    """One row per system, one column per figure, as in issue 7: the median
    in bold, every run's figure in brackets."""
    lines = ["| | " + " | ".join(label for _, _, label in COLUMNS) + " |"]
    lines.append("|---" * (len(COLUMNS) + 1) + "|")
    for name, scenarios in results.items():
        cells = [cell(scenarios.get(scenario, []), key) for scenario, key, _ in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    loads = [
        r.get("loadavg_before")
        for scenarios in results.values()
        for runs in scenarios.values()
        for r in runs
    ]
    numbers = [x for x in loads if isinstance(x, int | float)]
    if numbers:
        lines.append("")
        lines.append(
            f"1-minute load average before each run: {min(numbers):g} to {max(numbers):g} "
            f"(median {statistics.median(numbers):g}) on 2 cores"
        )
    return "\n".join(lines)


def ratios(results: Results) -> list[str]:
    """Each other row against the first row, figure by figure."""
    names = list(results)
    if len(names) < 2:
        return []
    first = names[0]
    out = []
    for other in names[1:]:
        for scenario, key, label in COLUMNS:
            mine = median([r.get(key) for r in results[first].get(scenario, [])])
            theirs = median([r.get(key) for r in results[other].get(scenario, [])])
            if mine and theirs:
                out.append(f"{label}: {first} / {other} = {mine / theirs:.2f}")
    return out


def merge(files: list[Results]) -> Results:
    """The --json files of several runs as one: a row's runs of a scenario are
    pooled across files (e.g. one file per scenario, or per run)."""
    merged: Results = {}
    for results in files:
        for name, scenarios in results.items():
            row = merged.setdefault(name, {})
            for scenario, runs in scenarios.items():
                row.setdefault(scenario, []).extend(runs)
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--users", type=int, default=1000, help="steps: connected users")
    parser.add_argument("--rates", default="500,1000,2000,4000,6000,8000,12000,16000")
    parser.add_argument("--step-s", type=float, default=10.0)
    parser.add_argument("--idle-users", type=int, default=5000)
    parser.add_argument(
        "--idle-traffic-s", type=float, default=30.0, help="idle: 500/s for this long"
    )
    parser.add_argument("--restart-users", type=int, default=2000)
    parser.add_argument("--connect-concurrency", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1, help="orderpush gateway --workers N")
    parser.add_argument("--server-core", default="0", help="taskset -c list for the server")
    parser.add_argument("--load-core", default="1", help="taskset -c list for the load client")
    parser.add_argument("--kafka", default="127.0.0.1:9092")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--orderpush-env", action="append", default=[], help="NAME=VALUE for the gateway"
    )
    parser.add_argument(
        "--gateway-args", default="", help="more `orderpush gateway` flags, e.g. '--loop asyncio'"
    )
    parser.add_argument(
        "--compression",
        default="disabled",
        choices=["disabled", "context-takeover", "no-context-takeover"],
        help="permessage-deflate offered by the load client (browsers offer context-takeover)",
    )
    parser.add_argument("--json", help="write every run's figures here")
    parser.add_argument("--keep-logs", metavar="DIR", help="keep the servers' logs in DIR")
    parser.add_argument("--label", help="the table's row name (with one system)")
    parser.add_argument(
        "--nice", type=int, default=0, help="nice level of server and load client (e.g. -10)"
    )
    parser.add_argument(
        "--table",
        nargs="+",
        metavar="JSON",
        help="run nothing: print one table from the --json files of earlier runs "
        "(a row's runs pooled across files)",
    )
    args = parser.parse_args()
    if args.table:
        merged = merge([json.loads(Path(path).read_text()) for path in args.table])
        print(table(merged))
        print()
        print("\n".join(ratios(merged)))
        return
    args.loadclient = build_loadclient()
    systems = [s for s in args.systems.split(",") if s]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        parser.error(f"unknown system(s) {unknown}; known: {', '.join(SYSTEMS)}")
    if "centrifugo" in systems:
        args.centrifugo = build_centrifugo()
    scenarios = [s for s in args.scenarios.split(",") if s]
    if args.label and len(systems) != 1:
        parser.error("--label names one system's row")
    names = {s: args.label or LABELS[s] for s in systems}
    results: Results = {names[s]: {} for s in systems}
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(args.keep_logs or tmp)
        logs.mkdir(parents=True, exist_ok=True)
        for run in range(args.runs):
            for scenario in scenarios:
                for system in systems:
                    load_before = os.getloadavg()[0]
                    figures = RUNNERS[scenario](args, make_server(args, system, logs))
                    figures["loadavg_before"] = round(load_before, 2)
                    figures["loadavg_after"] = round(os.getloadavg()[0], 2)
                    results[names[system]].setdefault(scenario, []).append(figures)
                    brief = {k: v for k, v in figures.items() if not isinstance(v, dict | list)}
                    print(f"run {run + 1} {scenario} {system}: {json.dumps(brief)}", flush=True)
    print()
    print(
        f"Side by side ({machine()}; server on core {args.server_core}, load on core "
        f"{args.load_core}; medians of {args.runs} runs, each run in brackets)"
    )
    print()
    print(table(results))
    print()
    for line in ratios(results):
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
