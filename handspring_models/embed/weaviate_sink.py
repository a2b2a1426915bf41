"""Straight into Weaviate: each embedded row imported with its vector (bring your own vectors)
through weaviate-client v4's batch API.

Objects get a UUID derived from ``(modality, id)`` (uuid5), so importing a row again, as a
resumed run does for the rows of the part a kill left unpublished, overwrites the same object
instead of adding a second one. Before a part is published the batch is flushed, so every
published row has reached Weaviate. Error rows are not imported. Objects Weaviate refuses are
counted and logged (the summary says how many); the run goes on.
"""

from __future__ import annotations

import logging
from urllib.parse import urlparse

from .dataset import Rows

log = logging.getLogger("handspring_models.embed")


def connect(url: str, grpc_port: int | None = None, api_key: str | None = None):
    """A v4 client for ``http(s)://host:port`` (gRPC on ``grpc_port``, by default 50051)."""
    import weaviate
    from weaviate.classes.init import Auth

    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"--weaviate {url!r}: give a URL such as http://localhost:8080")
    secure = parsed.scheme == "https"
    return weaviate.connect_to_custom(
        http_host=parsed.hostname, http_port=parsed.port or (443 if secure else 80), http_secure=secure,
        grpc_host=parsed.hostname, grpc_port=grpc_port or 50051, grpc_secure=secure,
        auth_credentials=Auth.api_key(api_key) if api_key else None,
    )


class WeaviateSink:
    """Feeds rows to ``collection.batch.fixed_size(batch_size)``; ``flush()`` waits until every
    object added so far was answered."""

    def __init__(self, collection, batch_size: int = 100, concurrent_requests: int = 2):
        self.collection = collection
        self._batch_context = collection.batch.fixed_size(batch_size=batch_size, concurrent_requests=concurrent_requests)
        self.batch = self._batch_context.__enter__()
        self.sent = 0
        self.failed = 0

    def add(self, rows: Rows) -> None:
        from weaviate.util import generate_uuid5

        for row, (item_id, modality, error) in enumerate(zip(rows.ids, rows.modalities, rows.errors)):
            if error is not None:
                continue
            self.batch.add_object(properties={"source_id": item_id, "modality": modality},
                                  vector=rows.vectors[row].tolist(), uuid=generate_uuid5(f"{modality}\0{item_id}"))
            self.sent += 1

    def flush(self) -> None:
        self.batch.flush()
        self._count_failures()

    def _count_failures(self) -> None:
        failed = self.collection.batch.failed_objects
        for failure in failed[self.failed:]:
            log.warning("weaviate refused %s: %s", failure.object_.properties.get("source_id"), failure.message)
        self.failed = len(failed)

    def close(self) -> None:
        self._batch_context.__exit__(None, None, None)
        self._count_failures()
