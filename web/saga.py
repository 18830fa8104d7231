"""An order's saga as five steps, built from its timeline of events.

The rules (which event lights which step, and how) are data: the server
renders the initial timeline with them, and the page script gets the same
table as JSON to light steps up as events arrive, so the two never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from web.formatting import describe_event

#: Step states, weakest first: a step shows the strongest state it reached.
#: `skipped` is a waiting step of a cancelled order (never reached).
RANK: Final = {"waiting": 0, "skipped": 0, "active": 1, "done": 2, "failed": 3, "refunded": 3}

STATE_TEXT: Final = {
    "waiting": "Waiting",
    "skipped": "Not reached",
    "active": "In progress",
    "done": "Done",
    "failed": "Failed",
    "refunded": "Refunded",
}


@dataclass(frozen=True, slots=True)
class Rule:
    step: str
    state: str
    label: str


@dataclass(frozen=True, slots=True)
class StepSpec:
    key: str
    title: str


STEPS: Final = (
    StepSpec("payment", "Payment"),
    StepSpec("order", "Order"),
    StepSpec("inventory", "Inventory"),
    StepSpec("billing", "Billing"),
    StepSpec("delivery", "Delivery"),
)

RULES: Final[Mapping[str, Rule]] = {
    "payment.authorized": Rule("payment", "done", "Authorized"),
    "payment.declined": Rule("payment", "failed", "Declined"),
    "payment.refunded": Rule("payment", "refunded", "Refunded"),
    "order.pending": Rule("order", "active", "Placed, pending"),
    "order.confirmed": Rule("order", "done", "Confirmed"),
    "order.cancelled": Rule("order", "failed", "Cancelled"),
    "inventory.reserved": Rule("inventory", "done", "Reserved"),
    "inventory.rejected": Rule("inventory", "failed", "Rejected"),
    "billing.invoiced": Rule("billing", "done", "Invoiced"),
    "delivery.scheduled": Rule("delivery", "done", "Scheduled"),
}


def rules_json() -> dict[str, Any]:
    """The rules for the page script (rendered into the page as JSON)."""
    return {
        "rules": {
            t: {"step": r.step, "state": r.state, "label": r.label} for t, r in RULES.items()
        },
        "rank": RANK,
        "stateText": STATE_TEXT,
    }


@dataclass(slots=True)
class Entry:
    """One event as shown under its step."""

    event_id: str
    type: str
    label: str
    occurred_at: str
    detail: str
    version: int | None


@dataclass(slots=True)
class Step:
    key: str
    title: str
    state: str = "waiting"
    label: str = "Waiting"
    entries: list[Entry] = field(default_factory=list)


@dataclass(slots=True)
class Timeline:
    steps: list[Step]
    other: list[Entry]
    status: str | None
    version: int
    reason: str | None


def build_timeline(events: Iterable[Mapping[str, Any]]) -> Timeline:
    """Apply events in the order given (the storefront's timeline order)."""
    steps = {spec.key: Step(spec.key, spec.title) for spec in STEPS}
    other: list[Entry] = []
    seen: set[str] = set()
    status: str | None = None
    version = 0
    reason: str | None = None
    for event in events:
        type_ = str(event.get("type", ""))
        event_id = str(event.get("event_id") or f"{type_}@{event.get('occurred_at', '')}")
        if event_id in seen:
            continue
        seen.add(event_id)
        rule = RULES.get(type_)
        raw_version = event.get("version")
        ev_version = raw_version if isinstance(raw_version, int) else None
        entry = Entry(
            event_id=event_id,
            type=type_,
            label=rule.label if rule else type_,
            occurred_at=str(event.get("occurred_at", "")),
            detail=describe_event(event),
            version=ev_version,
        )
        if type_.startswith("order.") and ev_version is not None and ev_version > version:
            version = ev_version
            status = str(event.get("status") or type_.removeprefix("order."))
            data = event.get("data")
            reason = (
                str(data["reason"]) if isinstance(data, Mapping) and data.get("reason") else None
            )
        if rule is None:
            other.append(entry)
            continue
        step = steps[rule.step]
        step.entries.append(entry)
        if RANK[rule.state] >= RANK[step.state]:
            step.state, step.label = rule.state, rule.label
    if status == "cancelled":
        for step in steps.values():
            if step.state == "waiting":
                step.state, step.label = "skipped", STATE_TEXT["skipped"]
    return Timeline(list(steps.values()), other, status, version, reason)


def empty_timeline() -> Timeline:
    """All steps waiting: the skeleton the page script fills in."""
    return build_timeline(())
