"""Keeps long-lived sockets out of the cyclic collector's full passes.

Every socket brings ~100 objects that live as long as it does. With 5,000
idle sockets (~530k tracked objects) a full collection stops the event loop
for 0.9-2.7 s, and while sockets connect CPython runs one every 6-10 s (a
full pass is due once the objects that survived young collections reach a
quarter of the old generation), which is what pushed p99 at 500/s with
5,000 idle users to ~1 s (bench/README.md, issue 7). Raising the
thresholds only spaces those passes out (each still scans every object);
`gc.freeze()` moves everything alive into the permanent generation, which
no pass scans, so passes only scan what arrived since.

After every `FREEZE_EVERY_ADDS` registered sockets the young generations
are collected (cheap: only recent objects) and everything is frozen. A
frozen object freed by reference counting is still freed; only frozen
*cyclic* garbage (a disconnected socket's cycles) is not, so once as many
sockets left as were frozen, everything is unfrozen and the next full pass
(one stall per turnover of the population, not one per few seconds of
connects) reclaims it.
"""

from __future__ import annotations

import gc

FREEZE_EVERY_ADDS = 500


class ConnectFreezer:
    def __init__(self, every_adds: int = FREEZE_EVERY_ADDS) -> None:
        self._every_adds = every_adds
        self._adds = 0
        self._frozen_sockets = 0
        self._removes = 0

    def added(self) -> None:
        self._adds += 1
        if self._adds < self._every_adds:
            return
        gc.collect(1)
        gc.freeze()
        self._frozen_sockets += self._adds
        self._adds = 0

    def removed(self) -> None:
        if self._frozen_sockets == 0:
            return
        self._removes += 1
        if self._removes >= self._frozen_sockets:
            gc.unfreeze()
            self._frozen_sockets = 0
            self._removes = 0
