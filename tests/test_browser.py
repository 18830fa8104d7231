"""The pages in a real browser: headless Debian chromium, driven by
playwright-core from Node (`tests/browser/*.test.mjs`, run with `node --test`),
against the demo app under a real uvicorn on a free port.

One pytest test per test file, each with its own server. Node's output is
shown when it fails (and with `pytest -s`, always: the latency figures are in
it). Screenshots land in artifacts/screenshots/, the latency figures in
artifacts/latency.json. Needs `make browser` (deselect with
ORDERPUSH_TEST_BACKENDS without `browser`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.settings import Settings
from orderpush.demo import build_demo_app
from tests.backends import unique
from tests.harness import free_port, serve

ROOT = Path(__file__).resolve().parent.parent
BROWSER_TESTS = ROOT / "tests" / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
NODE_TIMEOUT_S = 300
#: Settings of the server one test file runs against, beyond the defaults.
#: token_refresh: tokens that expire within the test, so the page must refresh.
#: latency: its operator test places 60 orders for one user in seconds.
SETTINGS: dict[str, dict[str, Any]] = {
    "token_refresh.test.mjs": {"dev_token_ttl_s": 8.0},
    "latency.test.mjs": {"orders_per_minute": 1000},
}

pytestmark = [pytest.mark.browser, pytest.mark.timeout(NODE_TIMEOUT_S + 60)]


def _missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not Path(CHROMIUM).is_file():
        return f"{CHROMIUM} is missing"
    if not (BROWSER_TESTS / "node_modules" / "playwright-core").is_dir():
        return "playwright-core is not installed in tests/browser"
    return None


@pytest.mark.parametrize(
    "test_file",
    sorted(p.name for p in BROWSER_TESTS.glob("*.test.mjs")),
)
async def test_in_browser(test_file: str) -> None:
    missing = _missing()
    if missing:
        pytest.fail(f"{missing}: run `make browser` (scripts/install-browser.sh)")
    options = SETTINGS.get(test_file, {})
    admin_port = free_port()
    settings = Settings(
        sessions_url=f"memory://{unique('browser')}", admin_port=admin_port, **options
    )
    app = build_demo_app(settings)
    async with serve(app) as addr:
        env = {
            **os.environ,
            "ORDERPUSH_URL": f"http://{addr}",
            "ORDERPUSH_ADMIN_URL": f"http://127.0.0.1:{admin_port}",
            "CHROMIUM": CHROMIUM,
        }
        proc = await asyncio.create_subprocess_exec(
            "node",
            "--test",
            "--test-reporter=spec",
            str(BROWSER_TESTS / test_file),
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # so a timeout can end node and its chromium together
        )
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), NODE_TIMEOUT_S)
        except TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = await proc.communicate()
            pytest.fail(f"node --test {test_file} took over {NODE_TIMEOUT_S} s:\n{output.decode()}")
    text = output.decode(errors="replace")
    sys.stdout.write(text)
    assert proc.returncode == 0, f"node --test {test_file} failed:\n{text}"
