"""uvicorn's WebSocket protocol (websockets-sansio) with spread keepalive pings.

uvicorn pings every socket `ws_ping_interval` (20 s) after its handshake,
then `ws_ping_interval` after each pong. Sockets that connect in a burst
(5,000 in a few seconds: a deploy, a restart) therefore get their pings in
the same few seconds 20 s later, many in one turn of the event loop: measured
with 5,000 sockets, stalls of 85-130 ms of CPU every 20 s (bench/README.md,
"No stalls"). Here each socket's first ping comes at a random point between
0.5 and 1.5 intervals, so a burst's pings are spread over a whole interval,
and stay spread (each next ping follows its own pong). Dead peers are still
found: the first ping comes at most half an interval later than uvicorn's.

Everything else is uvicorn's own class; only the first ping's delay differs.
"""

from __future__ import annotations

import random
from typing import Final

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

#: The first ping comes after this many ping intervals, at random between the two.
FIRST_PING_SPREAD: Final = (0.5, 1.5)


class SpreadPingProtocol(WebSocketsSansIOProtocol):
    def start_keepalive(self) -> None:
        interval = self.ping_interval
        if interval is None or interval <= 0:
            return
        delay_s = interval * random.uniform(*FIRST_PING_SPREAD)
        self.ping_timer = self.loop.call_later(delay_s, self.send_keepalive_ping)
