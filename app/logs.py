"""The service's log format, set up once (by the app's start-up or by ``python -m app``)."""

from __future__ import annotations

import logging


def configure_logging(level: int) -> None:
    logger = logging.getLogger("handspring")
    logger.setLevel(level)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
