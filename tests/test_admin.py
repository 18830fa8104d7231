"""The admin listener: /metrics, /api/stats and /operator on their own port
(loopback by default); the public port answers 404 for them, in process and
as a real `orderpush gateway` process."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from gateway.admin import AdminListener, AdminListenerError
from gateway.app import Gateway
from gateway.settings import DEFAULT_ADMIN_PORT, Settings, settings_from_env
from orderpush.apps import gateway_app
from tests.backends import unique
from tests.harness import cluster, free_port, serve

SECRET = "admin-test-secret-0123456789abcdefghij"


async def test_public_port_answers_404_even_with_a_storefront_proxy() -> None:
    # A proxy to nowhere: anything forwarded would answer 502, not 404.
    admin_port = free_port()
    settings = Settings(
        sessions_url=f"memory://{unique('adm')}",
        storefront_url="http://127.0.0.1:9",
        admin_port=admin_port,
    )
    app = gateway_app(settings)
    async with (
        serve(app) as addr,
        httpx.AsyncClient(base_url=f"http://{addr}", trust_env=False) as public,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{admin_port}", trust_env=False) as admin,
    ):
        for path in ("/metrics", "/api/stats", "/operator"):
            response = await public.get(path)
            assert response.status_code == 404, path
            assert response.json() == {"error": "not_found"}
        assert (await public.post("/api/stats")).status_code == 404
        assert (await public.get("/api/orders")).status_code == 502  # the proxy still works
        assert (await public.get("/healthz")).status_code == 200

        metrics = await admin.get("/metrics")
        assert metrics.status_code == 200 and "orderpush_connections" in metrics.text
        stats = (await admin.get("/api/stats")).json()
        gateway: Gateway = app.state.gateway
        assert stats["instance_id"] == gateway.settings.instance_id
        assert "Operator" in (await admin.get("/operator")).text
        assert (await admin.get("/static/operator.js")).status_code == 200
        assert (await admin.get("/healthz")).status_code == 200
        assert (await admin.get("/ws")).status_code == 404  # nothing else lives there


def test_admin_listener_defaults_to_loopback_9000() -> None:
    settings = settings_from_env({"ORDERPUSH_JWT_SECRET": SECRET}).validated()
    assert (settings.admin_host, settings.admin_port) == ("127.0.0.1", DEFAULT_ADMIN_PORT)
    off = settings_from_env({"ORDERPUSH_JWT_SECRET": SECRET, "ORDERPUSH_ADMIN_PORT": "off"})
    assert off.admin_port is None
    assert Settings().admin_port is None  # apps built in process start none


async def test_a_taken_admin_port_stops_the_start_naming_the_variable() -> None:
    app = gateway_app(Settings(sessions_url=f"memory://{unique('adm')}"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        listener = AdminListener(app.state.gateway, "127.0.0.1", port)
        with pytest.raises(AdminListenerError, match="ORDERPUSH_ADMIN_PORT"):
            await listener.start()


async def test_real_gateway_process_serves_admin_paths_on_the_admin_port_only(
    tmp_path: Path,
) -> None:
    env = {
        "ORDERPUSH_JWT_SECRET": SECRET,
        "ORDERPUSH_BUS": "memory://",
        "ORDERPUSH_SESSIONS": "memory://",
    }
    with cluster() as running:
        gateway = running.start("gw", ["gateway"], env, tmp_path)
        running.wait_healthy(gateway)
        async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
            for path in ("/metrics", "/api/stats", "/operator"):
                assert (await http.get(gateway.http + path)).status_code == 404, path
                assert (await http.get(gateway.admin + path)).status_code == 200, path
