"""ConnectFreezer: freezes after bursts of connects, unfreezes after a turnover."""

from __future__ import annotations

import gc

from gateway.gc_policy import ConnectFreezer


def test_freezes_after_every_n_adds_and_unfreezes_after_as_many_removes() -> None:
    gc.unfreeze()
    try:
        freezer = ConnectFreezer(every_adds=3)
        freezer.added()
        freezer.added()
        assert gc.get_freeze_count() == 0
        kept = [object() for _ in range(10)], {"a": [1]}
        freezer.added()
        assert gc.get_freeze_count() > 0
        for _ in range(2):
            freezer.removed()
        assert gc.get_freeze_count() > 0
        freezer.removed()
        assert gc.get_freeze_count() == 0
        assert kept
    finally:
        gc.unfreeze()
