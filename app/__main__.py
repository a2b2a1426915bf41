"""``python -m app [--host H] [--port P]``: the service, started the fast way.

``uvicorn app.main:app`` imports the whole web stack (FastAPI, pydantic, uvicorn) before the
application's start-up begins loading the model. Here the order is: settings (which imports
torch), start loading the weights in a thread, and only then import the web stack, while the
load runs (mostly native code that releases the GIL). Same app, same settings, same behaviour.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)

    from .memory import bound_kernel_caches, limit_malloc_arenas

    limit_malloc_arenas()  # before any thread starts
    bound_kernel_caches()  # before the model's first forward pass
    import logging

    from handspring_models import WeightsError

    from .loading import start_loading
    from .logs import configure_logging
    from .settings import Settings, SettingsError

    log = logging.getLogger("handspring.app")
    try:
        settings = Settings.from_env()
    except SettingsError as e:
        configure_logging(logging.INFO)
        log.error("%s", e)
        return 1
    configure_logging(settings.log_level_number)
    try:
        preload = start_loading(settings)
    except WeightsError as e:
        log.error("cannot start: %s", e)
        return 1

    import uvicorn  # the web stack, imported while the weights load

    from .main import create_app

    uvicorn.run(create_app(settings, preload=preload, launcher=True), host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
