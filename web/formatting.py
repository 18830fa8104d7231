"""Small formatting helpers for templates (Jinja filters)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

KNOWN_STATUSES: Final = frozenset({"pending", "confirmed", "cancelled"})

_SYMBOLS: Final = {"EUR": "€", "USD": "$", "GBP": "£"}
TIMES: Final = "\N{MULTIPLICATION SIGN}"


def status_class(status: object) -> str:
    """The CSS modifier for a status badge; unknown statuses get a neutral one."""
    text = str(status)
    return text if text in KNOWN_STATUSES else "other"


def money(cents: object, currency: object = "EUR") -> str:
    if not isinstance(cents, int) or isinstance(cents, bool):
        return ""
    amount = f"{cents / 100:,.2f}"
    symbol = _SYMBOLS.get(str(currency))
    return f"{symbol}{amount}" if symbol else f"{amount} {currency}"


def humanize(code: object) -> str:
    """`card_declined` -> `card declined`."""
    return str(code).replace("_", " ")


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def clock(value: object) -> str:
    """`2026-11-27T15:46:00.123Z` -> `15:46:00.123 UTC` (the page localizes it)."""
    parsed = parse_time(value)
    if parsed is None:
        return ""
    parsed = parsed.astimezone(UTC)
    return parsed.strftime("%H:%M:%S.") + f"{parsed.microsecond // 1000:03d} UTC"


def slot_text(slot: object) -> str:
    """`{"start": ..., "end": ...}` -> `28 Nov, 08:00-10:00 UTC` (an en dash); a string as is."""
    if isinstance(slot, str):
        return slot
    if not isinstance(slot, Mapping):
        return ""
    start, end = parse_time(slot.get("start")), parse_time(slot.get("end"))
    if start is None:
        return ""
    start = start.astimezone(UTC)
    text = f"{start.day} {start:%b}, {start:%H:%M}"
    if end is not None:
        text += f"\N{EN DASH}{end.astimezone(UTC):%H:%M}"
    return text + " UTC"


def items_summary(items: object) -> str:
    """`[{"sku": "SKU-1", "qty": 2}]` -> `2 x SKU-1` (with a multiplication sign)."""
    if not isinstance(items, list):
        return ""
    parts = []
    for item in items:
        if isinstance(item, Mapping) and "sku" in item:
            parts.append(f"{item.get('qty', 1)} {TIMES} {item['sku']}")
    return ", ".join(parts)


def describe_event(event: Mapping[str, Any]) -> str:
    """The interesting part of an event's `data`, in a few words."""
    data = event.get("data")
    if not isinstance(data, Mapping):
        return ""
    parts: list[str] = []
    if data.get("reason"):
        parts.append(humanize(data["reason"]))
    if data.get("sku"):
        parts.append(f"SKU {data['sku']}")
    if "amount_cents" in data:
        parts.append(money(data["amount_cents"], data.get("currency", "EUR")))
    if data.get("card_last4"):
        parts.append(f"card •••• {data['card_last4']}")
    if data.get("invoice_number"):
        parts.append(f"invoice {data['invoice_number']}")
    slot = slot_text(data.get("slot") or data.get("delivery_slot"))
    if slot:
        parts.append(f"slot {slot}")
    return " · ".join(p for p in parts if p)
