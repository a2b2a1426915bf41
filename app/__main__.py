"""``python -m app [--host H] [--port P]``: the service, started the fast way.

``uvicorn app.main:app`` imports the whole web stack (FastAPI, pydantic, uvicorn) before the
application's start-up begins loading the model. Here the order is: settings (which imports
torch), start loading the weights in a thread, and only then import the web stack, while the
load runs (mostly native code that releases the GIL). Same app, same settings, same behaviour.

SIGTERM drains before the server closes (``DrainingServer``): while in-flight requests finish,
for up to HANDSPRING_DRAIN_TIMEOUT_S, the port stays open, liveness answers, readiness and new
requests answer 503; then the process exits with status 0. A second signal, or Ctrl+C, is
uvicorn's own prompt shutdown.
"""

from __future__ import annotations

import argparse
import os
import sys


EPILOG = """\
Configured by HANDSPRING_* environment variables, among them HANDSPRING_WEIGHTS_DIR (the weights
folder), HANDSPRING_FEATURE (clip_vit_b_32, imagebind_huge, one tower such as clip_vit_b_32_text...),
HANDSPRING_PRECISION (fp32, bf16, auto, int8), HANDSPRING_BACKEND (torch, openvino), HANDSPRING_API_KEY (comma-separated keys; unset: no
authentication) and the limits; the README lists them all. Serves Weaviate's /vectorize and
OpenAI's /v1/embeddings and /v1/models."""


def main(argv: list[str] | None = None, prog: str = "python -m app") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="The Handspring HTTP service: uvicorn, with the model loading while\n"
                                     "the web stack is imported. SIGTERM drains.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="port (default: %(default)s)")
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

    from .draining import DrainingServer
    from .main import create_app

    app = create_app(settings, preload=preload, launcher=True)
    # The drain answers every request by its deadline; uvicorn's own wait is only a backstop.
    config = uvicorn.Config(app, host=args.host, port=args.port, timeout_graceful_shutdown=5)
    server = DrainingServer(config, app)
    server.run()
    if server.work_abandoned():
        # A forward pass whose requests were answered 503 may still be running: nobody wants its
        # result, and the interpreter would wait for its thread before exiting.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
