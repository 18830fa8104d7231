"""Time from `orderpush demo` to its first answered request.

    python bench/demo_startup.py [--runs 5] [--port 8790]

Starts the real command as a child process, polls GET /healthz every 10 ms
and prints the time to the first 200 for each run, then stops the process.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import httpx


def one_run(port: int) -> float:
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orderpush",
            "demo",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = started + 30
        while time.perf_counter() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                    return time.perf_counter() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.01)
        raise SystemExit("the demo did not answer within 30 s")
    finally:
        process.terminate()
        process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--port", type=int, default=8790)
    args = parser.parse_args()
    times = [one_run(args.port) for _ in range(args.runs)]
    for n, seconds in enumerate(times, 1):
        print(f"run {n}: {seconds * 1000:.0f} ms")
    print(f"median {statistics.median(times) * 1000:.0f} ms over {len(times)} runs")


if __name__ == "__main__":
    main()
