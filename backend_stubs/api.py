"""The storefront HTTP API (docs/protocol.md section 3), as Starlette routes.

`storefront_routes` gives plain routes with their full `/api/...` paths, so
the demo can put them into the gateway's app next to `/ws`; `create_app`
serves them alone with the stack's lifecycle (`orderpush stubs`).

Every route needs a valid bearer token, except the dev token route, which
exists only in development mode (a 404 otherwise, so a production server
does not even reveal it).
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Final

import msgspec
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from backend_stubs.order_view import OrderView
from backend_stubs.payment import PaymentService
from backend_stubs.stack import StubStack
from backend_stubs.validation import (
    InvalidBody,
    check_idempotency_key,
    parse_order_request,
    parse_user_id,
)
from orderpush_core.auth import InvalidToken, TokenVerifier, bearer_token, issue_token
from orderpush_core.bus.base import BusError, EventBus
from orderpush_core.limits import ORDER_RATE, KeyedBuckets

log = logging.getLogger("orderpush.stubs.api")

MAX_BODY_BYTES: Final = 64 * 1024
#: Retry-After of a 503 bus_unavailable, in seconds.
RETRY_AFTER_S: Final = 1
DEFAULT_ORDERS_PER_MINUTE: Final = 60

Handler = Callable[[Request], Awaitable[Response]]


class _Reject(Exception):
    """Ends a request early with this response."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def _error(status_code: int, error: str, **extra: Any) -> _Reject:
    return _Reject(JSONResponse({"error": error, **extra}, status_code))


def _invalid(exc: InvalidBody) -> _Reject:
    return _error(422, "invalid_body", fields=exc.fields)


class StorefrontApi:
    """The route handlers and what they need."""

    def __init__(
        self,
        *,
        payment: PaymentService | None,
        view: OrderView | None,
        jwt_secret: str,
        dev_mode: bool,
        token_ttl_s: float,
        verifier: TokenVerifier | None,
        orders_per_minute: int = DEFAULT_ORDERS_PER_MINUTE,
        on_limited: Callable[[str], None] | None = None,
    ) -> None:
        self.payment = payment
        self.view = view
        self.jwt_secret = jwt_secret
        self.dev_mode = dev_mode
        self.token_ttl_s = token_ttl_s
        self.verifier = verifier or TokenVerifier(key=jwt_secret)
        # Orders per user in this process: a token bucket refilled each minute.
        self.orders_per_minute = orders_per_minute
        self.order_buckets = KeyedBuckets(orders_per_minute / 60, orders_per_minute)
        self.on_limited = on_limited

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/orders", _guarded(self.create_order), methods=["POST"]),
            Route("/api/orders", _guarded(self.list_orders), methods=["GET"]),
            Route("/api/orders/{order_id}", _guarded(self.get_order), methods=["GET"]),
            Route("/api/dev/token", _guarded(self.dev_token), methods=["POST"]),
        ]

    # -- helpers -----------------------------------------------------------

    async def _user(self, request: Request) -> str:
        token = bearer_token(request.headers.get("authorization"))
        if token is None:
            raise self._unauthorized("missing bearer token")
        try:
            return (await self.verifier.averify(token)).user_id
        except InvalidToken as exc:
            # The reason is for the client's developer; it never echoes the token.
            raise self._unauthorized(f"invalid token: {exc}") from None

    @staticmethod
    def _unauthorized(message: str) -> _Reject:
        return _Reject(
            JSONResponse(
                {"error": "unauthorized", "message": message},
                401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        )

    def _view(self) -> OrderView:
        if self.view is None:
            raise _error(503, "unavailable", message="the order view does not run here")
        return self.view

    # -- routes ------------------------------------------------------------

    async def create_order(self, request: Request) -> Response:
        user_id = await self._user(request)
        bucket = self.order_buckets.bucket(user_id)
        if not bucket.take():
            if self.on_limited is not None:
                self.on_limited(ORDER_RATE)
            retry_after_s = max(1, math.ceil(bucket.retry_after_s()))
            raise _Reject(
                JSONResponse(
                    {
                        "error": "rate_limited",
                        "message": f"at most {self.orders_per_minute} orders per minute",
                        "retry_after_s": retry_after_s,
                    },
                    429,
                    headers={"Retry-After": str(retry_after_s)},
                )
            )
        key = request.headers.get("idempotency-key")
        try:
            if key is not None:
                check_idempotency_key(key)
            order = parse_order_request(await _json_body(request))
        except InvalidBody as exc:
            raise _invalid(exc) from None
        if self.payment is None:
            raise _error(503, "unavailable", message="the payment service does not run here")
        try:
            answer = await self.payment.place_order(
                user_id,
                order,
                idempotency_key=key,
                traceparent=request.headers.get("traceparent"),
            )
        except BusError as exc:
            log.warning("placing an order failed: %s", exc)
            # Retrying with the same key is safe: it sends the same event.
            raise _Reject(
                JSONResponse(
                    {"error": "bus_unavailable", "message": "try again"},
                    503,
                    headers={"Retry-After": str(RETRY_AFTER_S)},
                )
            ) from None
        headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
        return JSONResponse(answer.body, answer.status_code, headers=headers)

    async def list_orders(self, request: Request) -> Response:
        user_id = await self._user(request)
        return JSONResponse({"orders": self._view().list_orders(user_id)})

    async def get_order(self, request: Request) -> Response:
        user_id = await self._user(request)
        # Someone else's order answers exactly like a missing one, so order
        # ids cannot be probed.
        order = self._view().get_order(user_id, request.path_params["order_id"])
        if order is None:
            raise _error(404, "not_found")
        return JSONResponse(order)

    async def dev_token(self, request: Request) -> Response:
        if not self.dev_mode:
            raise _error(404, "not_found")
        try:
            user_id = parse_user_id(await _json_body(request))
        except InvalidBody as exc:
            raise _invalid(exc) from None
        algorithm = self.verifier.algorithm
        token = issue_token(
            user_id,
            self.jwt_secret,
            ttl_s=self.token_ttl_s,
            # Dev tokens must pass this API's own verifier: same claims, and
            # the same HMAC family (a public key cannot sign anything).
            algorithm=algorithm if algorithm.startswith("HS") else "HS256",
            audience=self.verifier.audience,
            issuer=self.verifier.issuer,
        )
        return JSONResponse({"token": token, "user_id": user_id, "expires_in_s": self.token_ttl_s})


def _guarded(handler: Handler) -> Handler:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except _Reject as reject:
            return reject.response

    endpoint.__name__ = handler.__name__
    return endpoint


async def _json_body(request: Request) -> Any:
    """The body as JSON, read up to MAX_BODY_BYTES (then 413)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _error(413, "body_too_large", max_bytes=MAX_BODY_BYTES)
        chunks.append(chunk)
    try:
        return msgspec.json.decode(b"".join(chunks))
    except msgspec.DecodeError:
        raise InvalidBody({"body": "must be valid JSON"}) from None


def storefront_routes(
    *,
    payment: PaymentService | None,
    view: OrderView | None,
    jwt_secret: str,
    dev_mode: bool = False,
    token_ttl_s: float = 3600.0,
    verifier: TokenVerifier | None = None,
    orders_per_minute: int = DEFAULT_ORDERS_PER_MINUTE,
    on_limited: Callable[[str], None] | None = None,
) -> list[BaseRoute]:
    """The storefront routes. A missing service answers 503 on its routes
    (`orderpush stubs --only ...` may run the API without it)."""
    return StorefrontApi(
        payment=payment,
        view=view,
        jwt_secret=jwt_secret,
        dev_mode=dev_mode,
        token_ttl_s=token_ttl_s,
        verifier=verifier,
        orders_per_minute=orders_per_minute,
        on_limited=on_limited,
    ).routes()


def create_app(
    stack: StubStack,
    *,
    jwt_secret: str,
    dev_mode: bool = False,
    token_ttl_s: float = 3600.0,
    verifier: TokenVerifier | None = None,
    orders_per_minute: int = DEFAULT_ORDERS_PER_MINUTE,
    on_limited: Callable[[str], None] | None = None,
    bus: EventBus | None = None,
) -> Starlette:
    """The storefront API and `/healthz`: the one assembly of the stubs' app.

    The lifespan starts `bus` (if given: the caller's own) and `stack`, and
    stops them in reverse. Mounted in another app (the demo) the lifespan
    does not run: that app starts the stack. Refusals by a limit go to
    `on_limited` (the demo counts them with the gateway's); without it the
    app counts them itself and serves them on `/metrics` (`orderpush stubs`:
    a backend service, its port is not the public one).
    """

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if bus is not None:
            await bus.start()
        try:
            await stack.start()
            try:
                yield
            finally:
                await stack.stop()
        finally:
            if bus is not None:
                await bus.stop()

    async def healthz(request: Request) -> Response:
        running = [*stack.runners, *(["view"] if stack.view is not None else [])]
        return JSONResponse({"status": "ok", "services": sorted(running)})

    own: list[BaseRoute] = [Route("/healthz", healthz)]
    if on_limited is None:
        registry = CollectorRegistry()
        limited = Counter(
            "orderpush_limited", "Requests refused by a limit", ["limit"], registry=registry
        )

        def count_limited(limit: str) -> None:
            limited.labels(limit).inc()

        async def metrics(request: Request) -> Response:
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

        on_limited = count_limited
        own.append(Route("/metrics", metrics))

    routes = storefront_routes(
        payment=stack.payment,
        view=stack.view,
        jwt_secret=jwt_secret,
        dev_mode=dev_mode,
        token_ttl_s=token_ttl_s,
        verifier=verifier,
        orders_per_minute=orders_per_minute,
        on_limited=on_limited,
    )
    return Starlette(routes=[*own, *routes], lifespan=lifespan)
