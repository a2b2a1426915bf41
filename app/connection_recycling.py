"""Close each keep-alive connection after N requests or T seconds, so that load spreads.

kube-proxy (and any L4 balancer) picks a replica per *connection*, and Weaviate's Go HTTP client
keeps its connections alive: one Weaviate node can stay on one replica while new replicas idle.
Like gRPC's max connection age, the response that reaches a limit carries ``Connection: close``;
uvicorn then closes the connection after sending it, and the client, told before it sends
anything more, opens a new one, which the balancer places afresh. No request is cut off.

A connection is known by its client address and port (unique while it is open). Entries of
closed connections are forgotten oldest first past ``capacity``: forgetting a live one only
restarts its count.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

Limits = Callable[[], tuple[int, float]]  # (max requests, max age in seconds); 0 = no limit


class ConnectionRecycling:
    def __init__(self, app, limits: Limits, clock: Callable[[], float] = time.monotonic, capacity: int = 10_000):
        self.app = app
        self.limits = limits
        self.clock = clock
        self.capacity = capacity
        self.connections: OrderedDict[tuple, tuple[int, float]] = OrderedDict()  # -> (requests, first seen)
        self.recycled = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope.get("client") or scope.get("http_version") not in ("1.0", "1.1"):
            return await self.app(scope, receive, send)
        max_requests, max_age = self.limits()
        if not max_requests and not max_age:
            return await self.app(scope, receive, send)
        key = tuple(scope["client"])
        now = self.clock()
        count, since = self.connections.pop(key, (0, now))
        count += 1
        if (max_requests and count >= max_requests) or (max_age and now - since >= max_age):
            self.recycled += 1
            return await self.app(scope, receive, _closing(send))
        self.connections[key] = (count, since)
        while len(self.connections) > self.capacity:
            self.connections.popitem(last=False)
        return await self.app(scope, receive, send)


def _closing(send):
    async def send_closing(message):
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
            message = {**message, "headers": [*headers, (b"connection", b"close")]}
        await send(message)
    return send_closing
