"""The server-rendered pages: storefront, my orders, an order's timeline, operator.

Pages are rendered with Jinja2 from the storefront API (called through the
gateway's `storefront` client with the user's token) and kept current in the
browser by the JS client over `/ws` and htmx fragment reloads; no page ever
needs a reload. The user is whoever the `orderpush_token` cookie names.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlsplit

import httpx
import jinja2
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from gateway.protocol import TOKEN_COOKIE
from gateway.settings import Settings
from orderpush_core.auth import InvalidToken
from web import catalog, formatting
from web.saga import build_timeline, empty_timeline, rules_json
from web.shop import Storefront, StorefrontError

HERE: Final = Path(__file__).resolve().parent
TEMPLATES_DIR: Final = HERE / "templates"
STATIC_DIR: Final = HERE / "static"

USER_ID: Final = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
ORDER_ID: Final = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,127}")
RECENT_ORDERS: Final = 5

#: Everything the pages load comes from this origin; htmx runs without eval.
CSP: Final = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    )
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # pages carry the user's token and live data
}


@dataclass(frozen=True, slots=True)
class Session:
    """The signed-in user, from a verified `orderpush_token` cookie."""

    user_id: str
    token: str
    expires_at: float


def make_templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=jinja2.select_autoescape(("html",)),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(
        clock=formatting.clock,
        money=formatting.money,
        status_class=formatting.status_class,
        items_summary=formatting.items_summary,
        humanize=formatting.humanize,
    )
    return Jinja2Templates(env=env)


def local_path(value: object, default: str = "/") -> str:
    """`value` if it is a path on this site (never `//host` or a URL), else `default`."""
    if isinstance(value, str) and value.startswith("/") and not value.startswith(("//", "/\\")):
        return value
    return default


class Pages:
    def __init__(self, settings: Settings, storefront: httpx.AsyncClient | None) -> None:
        self.settings = settings
        self.shop = Storefront(storefront)
        self.templates = make_templates()
        self.verifier = settings.token_verifier()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.index, name="index"),
            Route("/login", self.login, methods=["POST"], name="login"),
            Route("/logout", self.logout, methods=["POST"], name="logout"),
            Route("/session/refresh", self.refresh, methods=["POST"], name="refresh"),
            Route("/orders", self.orders, name="orders"),
            Route("/orders/{order_id}", self.order, name="order"),
            Route("/fragments/orders", self.orders_fragment, name="orders_fragment"),
            Route("/fragments/orders/{order_id}", self.timeline_fragment, name="timeline_fragment"),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ]

    # -- helpers -----------------------------------------------------------

    async def session(self, request: Request) -> Session | None:
        token = request.cookies.get(TOKEN_COOKIE)
        if not token:
            return None
        try:
            claims = await self.verifier.averify(token)
        except InvalidToken:
            return None
        return Session(claims.user_id, token, claims.expires_at)

    def render(
        self,
        request: Request,
        name: str,
        session: Session | None,
        status_code: int = 200,
        keep_cookie: bool = False,
        **context: Any,
    ) -> Response:
        context.setdefault("notice", None)
        context.setdefault("nav", None)
        response = self.templates.TemplateResponse(
            request,
            name,
            {"session": session, "dev_mode": self.settings.dev_mode, **context},
            status_code=status_code,
        )
        response.headers.update(SECURITY_HEADERS)
        if session is None and request.cookies.get(TOKEN_COOKIE) and not keep_cookie:
            # A token that no longer verifies (expired, other secret): drop it.
            response.delete_cookie(TOKEN_COOKIE, path="/", samesite="lax")
        return response

    def failure(self, request: Request, session: Session | None, exc: StorefrontError) -> Response:
        if exc.status_code == 401:
            # The storefront refused a token we accept: start over.
            response = RedirectResponse("/?expired=1", status_code=303)
            response.delete_cookie(TOKEN_COOKIE, path="/", samesite="lax")
            return response
        return self.error_page(request, session, exc.status_code, exc.message)

    def error_page(
        self, request: Request, session: Session | None, status_code: int, message: str
    ) -> Response:
        heading = "Not found" if status_code == 404 else "Something went wrong"
        return self.render(
            request, "error.html", session, status_code, heading=heading, message=message
        )

    def _same_origin(self, request: Request) -> bool:
        """Refuse cross-site form posts (login CSRF): the Origin, when sent, must be ours."""
        origin = request.headers.get("origin")
        if origin is None or origin in self.settings.allowed_origins:
            return True
        return urlsplit(origin).netloc == request.headers.get("host")

    def _sign_in_required(self, request: Request) -> Response:
        return RedirectResponse(f"/?next={quote(request.url.path, safe='/')}", status_code=303)

    # -- pages -------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        session = await self.session(request)
        orders: list[dict[str, Any]] = []
        orders_error: str | None = None
        if session is not None:
            try:
                orders = (await self.shop.orders(session.token))[:RECENT_ORDERS]
            except StorefrontError as exc:
                if exc.status_code == 401:
                    return self.failure(request, session, exc)
                orders_error = exc.message
        notice = None
        if session is None and (
            request.query_params.get("expired") or request.cookies.get(TOKEN_COOKIE)
        ):
            notice = "Your session has expired. Please sign in again."
        return self.render(
            request,
            "index.html",
            session,
            nav="shop",
            notice=notice,
            next=local_path(request.query_params.get("next")),
            login_error=None,
            login_value="",
            **self._shop_context(orders, orders_error),
        )

    def _shop_context(self, orders: list[dict[str, Any]], error: str | None) -> dict[str, Any]:
        return {
            "products": catalog.PRODUCTS,
            "cards": catalog.CARDS,
            "out_of_stock_sku": catalog.OUT_OF_STOCK_SKU,
            "demo_users": catalog.DEMO_USERS,
            "orders": orders,
            "orders_error": error,
            "limit": RECENT_ORDERS,
            "skeleton": empty_timeline(),
            "saga_rules": rules_json(),
        }

    async def login(self, request: Request) -> Response:
        if not self.settings.dev_mode:
            return Response("Not Found", status_code=404)
        if not self._same_origin(request):
            return Response("cross-site sign-in refused", status_code=403)
        form = await request.form()
        picked = form.get("pick") or form.get("user_id") or ""
        user_id = picked.strip() if isinstance(picked, str) else ""
        next_path = local_path(form.get("next"))
        if not USER_ID.fullmatch(user_id):
            return self.render(
                request,
                "index.html",
                None,
                status_code=422,
                nav="shop",
                next=next_path,
                login_error="Use 1 to 64 letters, digits, dots, dashes or underscores.",
                login_value=user_id[:64],
                **self._shop_context([], None),
            )
        try:
            token = await self.shop.dev_token(user_id)
            claims = await self.verifier.averify(token)
        except StorefrontError as exc:
            return self.error_page(request, None, exc.status_code, exc.message)
        except InvalidToken:
            return self.error_page(
                request,
                None,
                502,
                "The storefront issued a token this gateway does not accept "
                "(check that both use the same ORDERPUSH_JWT_SECRET).",
            )
        response = RedirectResponse(next_path, status_code=303)
        _set_token_cookie(response, request, token, claims.expires_at)
        return response

    async def refresh(self, request: Request) -> Response:
        """A fresh token for the signed-in user, before the page's expires: the
        JS client's `getToken` (web/static/live.js) calls this, sends the token
        on its open socket, and the cookie moves along for htmx requests.

        In dev mode the storefront mints it; otherwise whatever signs users in
        renews the cookie, and this hands the page the cookie's current token.
        """
        if not self._same_origin(request):
            return JSONResponse({"error": "cross_site"}, status_code=403)
        session = await self.session(request)
        if session is None:
            return JSONResponse(
                {"error": "unauthorized", "message": "sign in again"},
                status_code=401,
                headers={"Cache-Control": "no-store"},
            )
        token, expires_at = session.token, session.expires_at
        if self.settings.dev_mode:
            try:
                token = await self.shop.dev_token(session.user_id)
                expires_at = (await self.verifier.averify(token)).expires_at
            except (StorefrontError, InvalidToken) as exc:
                return JSONResponse(
                    {"error": "refresh_failed", "message": str(exc)[:200]}, status_code=502
                )
        response = JSONResponse(
            {"token": token, "user_id": session.user_id, "expires_at": expires_at},
            headers={"Cache-Control": "no-store"},
        )
        _set_token_cookie(response, request, token, expires_at)
        return response

    async def logout(self, request: Request) -> Response:
        if not self._same_origin(request):
            return Response("cross-site sign-out refused", status_code=403)
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(TOKEN_COOKIE, path="/", samesite="lax")
        return response

    async def orders(self, request: Request) -> Response:
        session = await self.session(request)
        if session is None:
            return self._sign_in_required(request)
        try:
            orders = await self.shop.orders(session.token)
        except StorefrontError as exc:
            return self.failure(request, session, exc)
        return self.render(
            request,
            "orders.html",
            session,
            nav="orders",
            orders=orders,
            orders_error=None,
            limit=None,
        )

    async def order(self, request: Request) -> Response:
        session = await self.session(request)
        if session is None:
            return self._sign_in_required(request)
        order_id = request.path_params["order_id"]
        order = None
        if ORDER_ID.fullmatch(order_id):
            try:
                order = await self.shop.order(session.token, order_id)
            except StorefrontError as exc:
                return self.failure(request, session, exc)
        if order is None:
            return self.error_page(
                request, session, 404, f"There is no order {order_id} among your orders."
            )
        return self.render(
            request,
            "order.html",
            session,
            nav="orders",
            order=order,
            timeline=build_timeline(order["timeline"]),
            saga_rules=rules_json(),
        )

    async def operator(self, request: Request) -> Response:
        """Served by the admin listener only (gateway/admin.py). Signed out on
        purpose: the admin port has no /ws, and a cookie of the public port
        (cookies ignore ports) must not be touched from here."""
        return self.render(
            request,
            "operator.html",
            None,
            keep_cookie=True,
            nav="operator",
            instance_id=self.settings.instance_id,
        )

    # -- fragments (htmx) --------------------------------------------------

    async def orders_fragment(self, request: Request) -> Response:
        session = await self.session(request)
        if session is None:
            return self.render(request, "_signed_out.html", None, status_code=401)
        limit: int | None = None
        raw = request.query_params.get("limit", "")
        if raw.isdigit() and int(raw) > 0:
            limit = int(raw)
        orders: list[dict[str, Any]] = []
        error = None
        try:
            orders = await self.shop.orders(session.token)
        except StorefrontError as exc:
            error = exc.message
        return self.render(
            request,
            "_orders.html",
            session,
            orders=orders[:limit] if limit else orders,
            orders_error=error,
            limit=limit,
        )

    async def timeline_fragment(self, request: Request) -> Response:
        session = await self.session(request)
        if session is None:
            return self.render(request, "_signed_out.html", None, status_code=401)
        order_id = request.path_params["order_id"]
        order = None
        if ORDER_ID.fullmatch(order_id):
            try:
                order = await self.shop.order(session.token, order_id)
            except StorefrontError as exc:
                return self.render(
                    request, "_error.html", session, status_code=502, message=exc.message
                )
        if order is None:
            return self.render(
                request, "_error.html", session, status_code=404, message="No such order."
            )
        return self.render(
            request,
            "_timeline.html",
            session,
            order=order,
            timeline=build_timeline(order["timeline"]),
        )


def _set_token_cookie(response: Response, request: Request, token: str, expires_at: float) -> None:
    response.set_cookie(
        TOKEN_COOKIE,
        token,
        max_age=max(1, int(expires_at - time.time())),
        path="/",
        samesite="lax",
        httponly=True,  # the page gets the token from a <meta> it renders
        secure=request.url.scheme == "https",
    )


def page_routes(settings: Settings, storefront: httpx.AsyncClient | None) -> list[BaseRoute]:
    """The pages, their fragments and `/static`: `create_app(pages=page_routes)`."""
    return Pages(settings, storefront).routes()


def operator_routes(settings: Settings) -> list[BaseRoute]:
    """The operator page and `/static`, for the admin listener
    (`create_app(admin_pages=operator_routes)`)."""
    pages = Pages(settings, None)
    return [
        Route("/operator", pages.operator),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
