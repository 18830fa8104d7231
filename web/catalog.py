"""What the demo shop sells and which cards it offers (the stubs have no catalogue)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class Product:
    sku: str
    name: str


@dataclass(frozen=True, slots=True)
class Card:
    number: str
    label: str
    hint: str


PRODUCTS: Final = (
    Product("SKU-1", "Espresso beans, 1 kg"),
    Product("SKU-2", "Stoneware mug"),
    Product("SKU-3", "Hand grinder"),
    Product("SKU-4", "Paper filters, 100"),
)

#: The SKU that inventory always rejects (docs/protocol.md, fault triggers).
OUT_OF_STOCK_SKU: Final = "OUT-OF-STOCK"

CARDS: Final = (
    Card("4242424242424242", "Visa •••• 4242", "approved"),
    Card("4000000000000002", "Visa •••• 0002", "always declined"),
)

#: Names offered on the dev sign-in form.
DEMO_USERS: Final = ("alice", "bob", "carol")
