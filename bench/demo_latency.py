"""Order placed -> `order.confirmed` on screen, in the one-process demo.

What it measures: the whole demo (`orderpush.demo.build_demo_app`: gateway,
stub services, storefront API, in-memory bus and session store) runs under
uvicorn in this process. One WebSocket client of one user is connected;
orders are placed one after the other with `POST /api/orders`, and for each
the time from sending the POST to receiving its `order.confirmed` frame is
taken (the saga's five hops through the bus, the gateway's pump, the socket).
Also printed: how long the POST itself took (its 202 answer).

Run it (no Kafka, no Redis needed):

    python bench/demo_latency.py            # 20 orders
    python bench/demo_latency.py --orders 100

It prints figures; it never passes or fails on them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from bench._support import machine, quantile_ms
from gateway.settings import Settings
from orderpush_core.auth import issue_token
from tests.harness import serve

ORDER = {"items": [{"sku": "SKU-1", "qty": 1}], "payment": {"card": "4242424242424242"}}


async def measure(orders: int, pause_s: float) -> None:
    import httpx

    from orderpush.demo import build_demo_app

    settings = Settings()
    app = build_demo_app(settings)
    user = "bench-demo-user"
    token = issue_token(user, settings.jwt_secret)
    confirmed_at: dict[str, float] = {}
    arrived = asyncio.Event()

    async with (
        serve(app) as addr,
        connect(f"ws://{addr}/ws", subprotocols=[Subprotocol("orderpush.v1")], proxy=None) as ws,
    ):
        await ws.send(json.dumps({"type": "auth", "token": token}))
        for expected in ("welcome", "snapshot"):
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert message["type"] == expected, message

        async def reader() -> None:
            async for raw in ws:
                now = time.perf_counter()
                message = json.loads(raw)
                event = message.get("event") or {}
                if message["type"] == "event" and event.get("type") == "order.confirmed":
                    confirmed_at[event["order_id"]] = now
                    arrived.set()

        reading = asyncio.create_task(reader())
        to_confirmed: list[float] = []
        post_s: list[float] = []
        async with httpx.AsyncClient(
            base_url=f"http://{addr}",
            headers={"Authorization": f"Bearer {token}"},
            trust_env=False,
        ) as http:
            for _ in range(orders):
                started = time.perf_counter()
                response = await http.post("/api/orders", json=ORDER)
                post_s.append(time.perf_counter() - started)
                if response.status_code != 202:
                    raise SystemExit(f"POST /api/orders: {response.status_code} {response.text}")
                order_id = response.json()["order_id"]
                async with asyncio.timeout(30):
                    while order_id not in confirmed_at:
                        arrived.clear()
                        await arrived.wait()
                to_confirmed.append(confirmed_at[order_id] - started)
                await asyncio.sleep(pause_s)
        reading.cancel()

    to_confirmed.sort()
    post_s.sort()
    print(f"demo latency, {orders} orders one after the other, 1 client ({machine()})")
    print(
        f"  POST -> order.confirmed  median {statistics.median(to_confirmed) * 1000:.1f} ms"
        f"  p90 {quantile_ms(to_confirmed, 0.9):.1f} ms  max {to_confirmed[-1] * 1000:.1f} ms"
    )
    print(
        f"  POST -> 202 answer       median {statistics.median(post_s) * 1000:.1f} ms"
        f"  p90 {quantile_ms(post_s, 0.9):.1f} ms  max {post_s[-1] * 1000:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--orders", type=int, default=20, help="orders to place (default 20)")
    parser.add_argument(
        "--pause-s", type=float, default=0.05, help="pause between orders (default 0.05)"
    )
    args = parser.parse_args()
    if not 1 <= args.orders <= 10_000:
        parser.error("--orders must be between 1 and 10000")
    asyncio.run(measure(args.orders, args.pause_s))


if __name__ == "__main__":
    main()
