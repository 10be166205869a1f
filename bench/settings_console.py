"""What-if settings for the console benchmark's WebSocket viewers: agentops' settings with the
channel layer's Redis connections configured for a crowd.

channels_redis takes a connection from a ``redis.asyncio.ConnectionPool`` of its process for
every command. redis-py 8 caps such a pool at 100 connections and then fails at once
(``MaxConnectionsError: Too many connections``), and reads with a 5 s socket timeout, the
same 5 s that channels_redis blocks in BZPOPMIN for: on an event loop busy with hundreds of
consumers the read can time out first, and the consumer waiting for messages dies (its
WebSocket is closed with 1011). ``hosts`` entries that are dicts pass their keys to the pool.
Used only by ``bench/console.py`` to measure what the viewers see without those two limits;
not the shipped configuration.
"""

from __future__ import annotations

from agentops.settings import *  # noqa: F403
from agentops.settings import CHANNEL_LAYER_URL

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [{"address": CHANNEL_LAYER_URL, "max_connections": 2000, "socket_timeout": 30}]
        },
    }
}
