"""The server-rendered pages, fragments and static files (web/), over real HTTP.

The demo app (gateway + stubs + pages on the memory bus) runs under uvicorn;
the live behaviour in a browser is tested in tests/browser/ (test_browser.py).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from gateway.settings import DEV_SECRET, Settings
from orderpush.demo import build_demo_app
from orderpush_core.auth import TokenVerifier, issue_token
from tests.backends import unique
from tests.harness import free_port, serve
from web.pages import page_routes
from web.saga import build_timeline

GOOD_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000002"
STEPS = ["payment", "order", "inventory", "billing", "delivery"]


@pytest.fixture
async def site() -> AsyncIterator[httpx.AsyncClient]:
    app = build_demo_app(Settings(sessions_url=f"memory://{unique('pages')}"))
    async with (
        serve(app) as addr,
        httpx.AsyncClient(base_url=f"http://{addr}", timeout=10.0) as client,
    ):
        yield client


async def sign_in(site: httpx.AsyncClient, user: str) -> str:
    response = await site.post("/login", data={"pick": user})
    assert response.status_code == 303, response.text
    token = site.cookies.get("orderpush_token")
    assert token
    return token


async def place(site: httpx.AsyncClient, token: str, *skus: str, card: str = GOOD_CARD) -> str:
    response = await site.post(
        "/api/orders",
        json={"items": [{"sku": s, "qty": 1} for s in skus], "payment": {"card": card}},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code in (202, 402), response.text
    order_id: str = response.json()["order_id"]
    return order_id


async def until(check: Any, timeout_s: float = 10.0) -> Any:
    """Call the async `check` until it returns something truthy (bounded)."""
    async with asyncio.timeout(timeout_s):
        while not (result := await check()):
            await asyncio.sleep(0.05)
        return result


def badge(html: str, order_id: str) -> str | None:
    row = re.search(rf'<tr id="order-{order_id}".*?</tr>', html, re.S)
    if row is None:
        return None
    status = re.search(r'data-role="status">([^<]*)<', row.group(0))
    return status.group(1) if status else None


def step_states(html: str) -> dict[str, str]:
    return dict(re.findall(r'data-step="(\w+)" data-state="(\w+)"', html))


# -- signing in ----------------------------------------------------------------


async def test_signed_out_storefront_offers_dev_sign_in(site: httpx.AsyncClient) -> None:
    response = await site.get("/")
    assert response.status_code == 200
    html = response.text
    assert '<form class="form signin" method="post" action="/login"' in html
    assert '<label for="user_id">' in html
    for name in ("alice", "bob", "carol"):
        assert f'value="{name}">Sign in as {name}</button>' in html
    assert 'id="conn"' in html and "Not signed in" in html
    assert 'name="orderpush-token"' not in html
    assert '<script src="/static/htmx.min.js" defer></script>' in html
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"


async def test_login_sets_the_token_cookie_and_redirects(site: httpx.AsyncClient) -> None:
    response = await site.post("/login", data={"user_id": "alice", "next": "/orders"})
    assert response.status_code == 303
    assert response.headers["location"] == "/orders"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("orderpush_token=")
    assert "Path=/" in cookie
    assert "SameSite=lax" in cookie
    assert "HttpOnly" in cookie
    max_age = int(re.search(r"Max-Age=(\d+)", cookie).group(1))  # type: ignore[union-attr]
    assert 3000 < max_age <= 3600
    token = site.cookies["orderpush_token"]
    assert TokenVerifier(DEV_SECRET).verify(token).user_id == "alice"

    page = await site.get("/")
    assert f'<meta name="orderpush-token" content="{token}">' in page.text
    assert "<strong data-user>alice</strong>" in page.text


async def test_login_refuses_bad_names_foreign_origins_and_open_redirects(
    site: httpx.AsyncClient,
) -> None:
    bad = await site.post("/login", data={"user_id": "no spaces"})
    assert bad.status_code == 422
    assert 'aria-invalid="true"' in bad.text and "user_id-error" in bad.text
    assert "orderpush_token" not in site.cookies

    foreign = await site.post(
        "/login", data={"pick": "mallory"}, headers={"Origin": "http://evil.example"}
    )
    assert foreign.status_code == 403
    assert "orderpush_token" not in site.cookies

    sneaky = await site.post("/login", data={"pick": "alice", "next": "//evil.example/"})
    assert sneaky.headers["location"] == "/"


async def test_logout_clears_the_cookie(site: httpx.AsyncClient) -> None:
    await sign_in(site, "alice")
    response = await site.post("/logout")
    assert response.status_code == 303
    assert 'orderpush_token=""' in response.headers["set-cookie"]
    assert "orderpush_token" not in site.cookies
    assert "Not signed in" in (await site.get("/")).text


async def test_an_expired_cookie_means_signed_out(site: httpx.AsyncClient) -> None:
    site.cookies.set("orderpush_token", issue_token("alice", DEV_SECRET, ttl_s=-10))
    response = await site.get("/")
    assert "Your session has expired" in response.text
    assert 'name="orderpush-token"' not in response.text
    assert 'orderpush_token=""' in response.headers["set-cookie"]
    assert (await site.get("/orders")).status_code == 303


# -- the storefront and my orders ----------------------------------------------


async def test_signed_in_storefront_has_the_order_form_and_live_orders(
    site: httpx.AsyncClient,
) -> None:
    await sign_in(site, "alice")
    html = (await site.get("/")).text
    assert '<form id="order-form"' in html
    for sku in ("SKU-1", "SKU-2", "SKU-3", "SKU-4"):
        assert f'data-sku="{sku}"' in html
    assert f'value="{GOOD_CARD}"' in html and f'value="{DECLINED_CARD}"' in html
    assert 'value="OUT-OF-STOCK"' in html
    assert 'hx-get="/fragments/orders?limit=5"' in html
    assert 'hx-trigger="orderpush:refresh from:body"' in html
    assert 'role="log" aria-live="polite"' in html
    assert '<script type="module" src="/static/shop.js"></script>' in html
    rules = json.loads(re.search(r'id="saga-rules">(.*?)</script>', html).group(1))  # type: ignore[union-attr]
    assert rules["rules"]["inventory.rejected"] == {
        "step": "inventory",
        "state": "failed",
        "label": "Rejected",
    }


async def test_orders_fragment_renders_only_the_users_orders(site: httpx.AsyncClient) -> None:
    bob = await sign_in(site, "bob")
    bobs = await place(site, bob, "SKU-2")
    alice = await sign_in(site, "alice")
    confirmed = await place(site, alice, "SKU-1")
    declined = await place(site, alice, "SKU-1", card=DECLINED_CARD)
    rejected = await place(site, alice, "SKU-1", "OUT-OF-STOCK")

    async def settled() -> str | None:
        html = (await site.get("/fragments/orders")).text
        want = {confirmed: "confirmed", declined: "cancelled", rejected: "cancelled"}
        return html if all(badge(html, o) == s for o, s in want.items()) else None

    html = await until(settled)
    assert "<table" in html and "<html" not in html  # a fragment, not a page
    assert bobs not in html
    assert "1 \N{MULTIPLICATION SIGN} SKU-1, 1 \N{MULTIPLICATION SIGN} OUT-OF-STOCK" in html

    limited = (await site.get("/fragments/orders?limit=1")).text
    assert limited.count('<tr id="order-') == 1 and rejected in limited  # newest first

    page = await site.get("/orders")
    assert page.status_code == 200
    assert all(o in page.text for o in (confirmed, declined, rejected))
    assert bobs not in page.text
    assert 'hx-get="/fragments/orders"' in page.text


async def test_orders_pages_need_a_session(site: httpx.AsyncClient) -> None:
    assert (await site.get("/fragments/orders")).status_code == 401
    redirect = await site.get("/orders")
    assert redirect.status_code == 303
    assert redirect.headers["location"] == "/?next=/orders"


# -- an order's timeline -------------------------------------------------------


async def test_timeline_page_shows_all_five_steps(site: httpx.AsyncClient) -> None:
    token = await sign_in(site, "alice")
    order_id = await place(site, token, "SKU-3")

    async def done() -> str | None:
        response = await site.get(f"/orders/{order_id}")
        states = step_states(response.text)
        return response.text if states and set(states.values()) == {"done"} else None

    html = await until(done)
    assert list(step_states(html)) == STEPS
    assert 'data-status="confirmed"' in html
    assert re.search(r'<time datetime="[^"]+" data-local>\d\d:\d\d:\d\d\.\d{3} UTC</time>', html)
    assert "invoice INV-" in html
    assert 'hx-get="/fragments/orders/' in html

    fragment = await site.get(f"/fragments/orders/{order_id}")
    assert fragment.status_code == 200
    assert step_states(fragment.text) == dict.fromkeys(STEPS, "done")


async def test_timeline_marks_declines_and_rejections(site: httpx.AsyncClient) -> None:
    token = await sign_in(site, "carol")
    declined = await place(site, token, "SKU-1", card=DECLINED_CARD)
    rejected = await place(site, token, "OUT-OF-STOCK")

    async def states(order_id: str, final: dict[str, str]) -> dict[str, str] | None:
        got = step_states((await site.get(f"/fragments/orders/{order_id}")).text)
        return got if all(got.get(k) == v for k, v in final.items()) else None

    d = await until(lambda: states(declined, {"payment": "failed", "order": "failed"}))
    assert d == {
        "payment": "failed",
        "order": "failed",
        "inventory": "skipped",
        "billing": "skipped",
        "delivery": "skipped",
    }
    r = await until(lambda: states(rejected, {"payment": "refunded", "inventory": "failed"}))
    assert r["order"] == "failed"
    html = (await site.get(f"/orders/{rejected}")).text
    assert "out of stock" in html and "Refunded" in html


async def test_someone_elses_order_is_not_found(site: httpx.AsyncClient) -> None:
    alice = await sign_in(site, "alice")
    order_id = await place(site, alice, "SKU-1")
    await sign_in(site, "bob")
    for path in (f"/orders/{order_id}", f"/fragments/orders/{order_id}", "/orders/..%2Fapi"):
        response = await site.get(path)
        assert response.status_code == 404, path
        assert order_id not in response.text or "There is no order" in response.text


# -- operator and static files ---------------------------------------------------


async def test_operator_page_and_its_stats_are_on_the_admin_listener_only() -> None:
    admin_port = free_port()
    settings = Settings(sessions_url=f"memory://{unique('pages')}", admin_port=admin_port)
    async with (
        serve(build_demo_app(settings)) as addr,
        httpx.AsyncClient(base_url=f"http://{addr}", timeout=10.0) as site,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{admin_port}", timeout=10.0) as admin,
    ):
        await sign_in(site, "alice")
        cookie = {"cookie": f"orderpush_token={site.cookies['orderpush_token']}"}
        answer = await admin.get("/operator", headers=cookie)
        assert "set-cookie" not in answer.headers
        html = answer.text
        for stat in ("connections", "events_per_s", "consumer_lag", "p50", "p99", "frames_sent"):
            assert f'data-stat="{stat}"' in html
        assert 'id="latency-chart"' in html and 'src="/static/operator.js"' in html
        # Signed out there (no /ws on the admin port), and the cookie is left alone.
        assert 'name="orderpush-token"' not in html
        stats = (await admin.get("/api/stats")).json()
        assert {"connections", "events_consumed", "push_latency_buckets"} <= stats.keys()
        for path in ("/operator", "/api/stats", "/metrics"):
            assert (await site.get(path)).status_code == 404, path


@pytest.mark.parametrize(
    ("path", "marker"),
    [
        ("/static/orderpush.js", "export class OrderpushClient"),
        ("/static/htmx.min.js", 'version:"2.'),
        ("/static/live.js", "from '/static/orderpush.js'"),
        ("/static/app.css", ".badge--confirmed"),
        ("/static/favicon.svg", "<svg"),
    ],
)
async def test_static_files_are_served(site: httpx.AsyncClient, path: str, marker: str) -> None:
    response = await site.get(path)
    assert response.status_code == 200
    assert marker in response.text
    if path.endswith(".js"):
        assert "javascript" in response.headers["content-type"]


async def test_static_does_not_leave_its_folder(site: httpx.AsyncClient) -> None:
    response = await site.get("/static/..%2Fpages.py")
    assert response.status_code == 404


# -- without dev mode or a storefront ------------------------------------------


async def test_without_dev_mode_the_page_explains_the_shop_login() -> None:
    settings = Settings(dev_mode=False)
    app = Starlette(routes=page_routes(settings, None))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client:
        html = (await client.get("/")).text
        assert "Sign in through the shop" in html and "orderpush_token" in html
        assert (await client.post("/login", data={"pick": "alice"})).status_code == 404

        client.cookies.set("orderpush_token", issue_token("alice", DEV_SECRET))
        response = await client.get("/orders")
        assert response.status_code == 503
        assert "no storefront is configured" in response.text


def test_build_timeline_applies_the_strongest_state_per_step() -> None:
    events: list[dict[str, Any]] = [
        {"event_id": "1", "type": "payment.authorized", "occurred_at": "2026-11-27T15:46:00.100Z"},
        {
            "event_id": "2",
            "type": "order.pending",
            "status": "pending",
            "version": 1,
            "occurred_at": "2026-11-27T15:46:00.200Z",
        },
        {
            "event_id": "3",
            "type": "order.cancelled",
            "status": "cancelled",
            "version": 2,
            "occurred_at": "2026-11-27T15:46:00.300Z",
            "data": {"reason": "out_of_stock"},
        },
        {
            "event_id": "2",
            "type": "order.pending",
            "status": "pending",
            "version": 1,
            "occurred_at": "2026-11-27T15:46:00.200Z",
        },  # a duplicate
        {"event_id": "4", "type": "payment.refunded", "occurred_at": "2026-11-27T15:46:00.400Z"},
        {
            "event_id": "5",
            "type": "order.shipped",
            "status": "shipped",
            "version": 3,
            "occurred_at": "2026-11-27T15:46:00.500Z",
        },
    ]
    cancelled = build_timeline(events[:5])
    assert {s.key: s.state for s in cancelled.steps} == {
        "payment": "refunded",
        "order": "failed",
        "inventory": "skipped",
        "billing": "skipped",
        "delivery": "skipped",
    }
    assert [e.event_id for e in cancelled.steps[1].entries] == ["2", "3"]  # once each
    assert (cancelled.status, cancelled.version, cancelled.reason) == (
        "cancelled",
        2,
        "out_of_stock",
    )

    later = build_timeline(events)
    assert [e.type for e in later.other] == ["order.shipped"]
    assert (later.status, later.version) == ("shipped", 3)  # unknown statuses as they are
