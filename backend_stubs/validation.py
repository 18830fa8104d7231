"""Strict validation of storefront request bodies, naming every bad field.

Hand-written rather than a msgspec schema: msgspec stops at the first error,
and the API promises a 422 that names *each* bad field
(`{"items[0].qty": "must be between 1 and 99", "payment.card": ...}`), so a
form can mark them all at once. Unknown fields are ignored, as everywhere in
the protocol.
"""

from __future__ import annotations

import re
from typing import Any, Final

from backend_stubs.payment import LineItem, OrderRequest

MAX_ITEMS: Final = 100
MAX_SKU_CHARS: Final = 64
MIN_QTY: Final = 1
MAX_QTY: Final = 99
_CARD: Final = re.compile(r"[0-9]{12,19}")
_USER_ID: Final = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
# Visible ASCII only: the key is stored and compared byte for byte.
_IDEMPOTENCY_KEY: Final = re.compile(r"[\x21-\x7e]{1,255}")


class InvalidBody(ValueError):
    """The body is not acceptable; `fields` maps each bad field to why."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__(", ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


def _is_int(value: Any) -> bool:
    # bool is an int in Python, but `true` is not a quantity.
    return isinstance(value, int) and not isinstance(value, bool)


def parse_order_request(body: Any) -> OrderRequest:
    """The order in a POST /api/orders body, or InvalidBody naming each problem."""
    if not isinstance(body, dict):
        raise InvalidBody({"body": "must be a JSON object"})
    errors: dict[str, str] = {}
    items: list[LineItem] = []

    raw_items = body.get("items")
    if raw_items is None:
        errors["items"] = "is required"
    elif not isinstance(raw_items, list) or not raw_items:
        errors["items"] = "must be a non-empty list"
    elif len(raw_items) > MAX_ITEMS:
        errors["items"] = f"must have at most {MAX_ITEMS} entries"
    else:
        for i, raw in enumerate(raw_items):
            where = f"items[{i}]"
            if not isinstance(raw, dict):
                errors[where] = "must be an object with sku and qty"
                continue
            sku: Any = raw.get("sku")
            qty: Any = raw.get("qty")
            if not isinstance(sku, str) or not sku.strip():
                errors[f"{where}.sku"] = "must be a non-empty string"
            elif len(sku) > MAX_SKU_CHARS:
                errors[f"{where}.sku"] = f"must be at most {MAX_SKU_CHARS} characters"
            if not _is_int(qty):
                errors[f"{where}.qty"] = "must be an integer"
            elif not MIN_QTY <= qty <= MAX_QTY:
                errors[f"{where}.qty"] = f"must be between {MIN_QTY} and {MAX_QTY}"
            if isinstance(sku, str) and _is_int(qty):
                items.append(LineItem(sku=sku, qty=qty))

    card = None
    payment = body.get("payment")
    if payment is None:
        errors["payment"] = "is required"
    elif not isinstance(payment, dict):
        errors["payment"] = "must be an object with card"
    else:
        card = payment.get("card")
        if card is None:
            errors["payment.card"] = "is required"
        elif not isinstance(card, str) or not _CARD.fullmatch(card):
            errors["payment.card"] = "must be a string of 12 to 19 digits"

    if errors:
        raise InvalidBody(errors)
    assert isinstance(card, str)
    return OrderRequest(items=tuple(items), card=card)


def parse_user_id(body: Any) -> str:
    """The `user_id` of a POST /api/dev/token body."""
    if not isinstance(body, dict):
        raise InvalidBody({"body": "must be a JSON object"})
    user_id = body.get("user_id")
    if not isinstance(user_id, str) or not _USER_ID.fullmatch(user_id):
        raise InvalidBody({"user_id": "must be 1 to 64 characters of A-Z a-z 0-9 _ . -"})
    return user_id


def check_idempotency_key(key: str) -> None:
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidBody({"Idempotency-Key": "must be 1 to 255 visible ASCII characters"})
