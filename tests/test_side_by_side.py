"""bench/side_by_side.py's plumbing without running anything: how each system's
server and load client are invoked, and the issue 7 table from stored runs.
Neither Go nor Centrifugo is needed (the benchmark itself is bench-only)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bench import side_by_side as sbs


def bench_args(**overrides: object) -> argparse.Namespace:
    args = argparse.Namespace(
        nice=0,
        server_core="0",
        load_core="1",
        kafka="127.0.0.1:9092",
        redis_url="redis://127.0.0.1:6379/0",
        workers=1,
        gateway_args="",
        orderpush_env=[],
        compression="disabled",
        loadclient=Path("/nonexistent/loadclient"),
        centrifugo=Path("/nonexistent/centrifugo"),
    )
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_centrifugo_server_is_pinned_with_the_shared_secret_and_its_own_prefix(
    tmp_path: Path,
) -> None:
    args = bench_args()
    one = sbs.make_server(args, "centrifugo", tmp_path)
    two = sbs.make_server(args, "centrifugo", tmp_path)
    assert one.argv[:3] == ["taskset", "-c", "0"]
    assert one.argv[3] == str(args.centrifugo)
    config = Path(flag(one.argv, "--config"))
    assert config.is_file() and config.parent == sbs.CENTRIFUGO_DIR
    assert one.env["CENTRIFUGO_CLIENT_TOKEN_HMAC_SECRET_KEY"] == sbs.SECRET
    assert one.env["CENTRIFUGO_HTTP_SERVER_PORT"] == str(one.port)
    assert one.env["CENTRIFUGO_ENGINE_REDIS_ADDRESS"] == args.redis_url
    # Fresh keys and API key per run, kept across the restart of one run.
    assert one.env["CENTRIFUGO_ENGINE_REDIS_PREFIX"] != two.env["CENTRIFUGO_ENGINE_REDIS_PREFIX"]
    assert one.env["CENTRIFUGO_HTTP_API_KEY"] == one.extra["api_key"]
    assert one.extra["api_key"] != two.extra["api_key"]


def test_centrifugo_load_client_gets_its_websocket_url_and_api(tmp_path: Path) -> None:
    args = bench_args()
    server = sbs.make_server(args, "centrifugo", tmp_path)
    argv = sbs.client_argv(args, server, 1000, "steps")
    assert argv[:3] == ["taskset", "-c", "1"]
    assert flag(argv, "-system") == "centrifugo"
    assert flag(argv, "-url") == f"ws://127.0.0.1:{server.port}/connection/websocket"
    assert flag(argv, "-api") == f"http://127.0.0.1:{server.port}/api/batch"
    assert flag(argv, "-api-key") == server.extra["api_key"]
    assert flag(argv, "-namespace") == sbs.CENTRIFUGO_NAMESPACE
    assert flag(argv, "-secret") == sbs.SECRET


@pytest.mark.parametrize(
    ("system", "path"),
    [("orderpush", "/ws"), ("socketio", ""), ("centrifugo", "/connection/websocket")],
)
def test_each_system_keeps_its_websocket_url(tmp_path: Path, system: str, path: str) -> None:
    args = bench_args()
    server = sbs.make_server(args, system, tmp_path)
    argv = sbs.client_argv(args, server, 10, "steps")
    assert flag(argv, "-url") == f"ws://127.0.0.1:{server.port}{path}"
    # Only Centrifugo's client is told about an HTTP API.
    assert ("-api" in argv) == (system == "centrifugo")


def test_config_names_the_namespace_the_client_uses() -> None:
    text = (sbs.CENTRIFUGO_DIR / "config.yaml").read_text()
    assert f"personal_channel_namespace: {sbs.CENTRIFUGO_NAMESPACE}" in text
    assert f"- name: {sbs.CENTRIFUGO_NAMESPACE}" in text
    assert "force_recovery: true" in text


def test_table_has_a_row_per_system_and_ratios_against_the_first() -> None:
    results: sbs.Results = {
        sbs.LABELS["orderpush"]: {"idle": [{"rss_per_idle_conn_kib": 30.0, "loadavg_before": 1.0}]},
        sbs.LABELS["socketio"]: {"idle": [{"rss_per_idle_conn_kib": 45.0, "loadavg_before": 2.0}]},
        sbs.LABELS["centrifugo"]: {
            "idle": [
                {"rss_per_idle_conn_kib": 48.0, "loadavg_before": 3.0},
                {"rss_per_idle_conn_kib": 52.0, "loadavg_before": 5.0},
            ]
        },
    }
    rows = sbs.table(results).splitlines()
    centrifugo = next(r for r in rows if r.startswith("| Centrifugo"))
    assert "**50** (48 / 52)" in centrifugo
    assert "1-minute load average before each run: 1 to 5 (median 2.5)" in rows[-1]
    lines = sbs.ratios(results)
    label = "RSS per idle connection, 5,000 (KiB)"
    assert f"{label}: {sbs.LABELS['orderpush']} / {sbs.LABELS['centrifugo']} = 0.60" in lines
    assert f"{label}: {sbs.LABELS['orderpush']} / {sbs.LABELS['socketio']} = 0.67" in lines


def test_table_files_pool_a_rows_runs_across_files() -> None:
    label = sbs.LABELS["centrifugo"]
    steps: sbs.Results = {label: {"steps": [{"rate_p99_50ms": 1000}]}}
    idle: sbs.Results = {label: {"idle": [{"connect_s": 2.0}]}}
    again: sbs.Results = {label: {"steps": [{"rate_p99_50ms": 4000}]}}
    merged = sbs.merge([steps, idle, again])
    assert merged == {
        label: {
            "steps": [{"rate_p99_50ms": 1000}, {"rate_p99_50ms": 4000}],
            "idle": [{"connect_s": 2.0}],
        }
    }
    assert steps[label]["steps"] == [{"rate_p99_50ms": 1000}]  # inputs left alone
