"""The ``handspring`` command: one entry point for the service, the weights and the models.

Each subcommand hands its arguments to the module that owns it (``app.__main__`` for ``serve``,
``handspring_models.weights`` for ``weights``), so ``python -m app`` and ``python -m
handspring_models.weights`` keep working and mean the same. Nothing heavy is imported before a
subcommand needs it: ``handspring --help`` does not load torch.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from importlib import metadata

PROG = "handspring"


def version() -> str:
    try:
        return metadata.version("handspring")
    except metadata.PackageNotFoundError:  # a checkout run as `python -m handspring`
        from handspring_models._version import distribution_version

        return distribution_version()


def serve(argv: list[str]) -> int:
    missing = [m for m in ("fastapi", "uvicorn", "prometheus_client", "orjson") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"{PROG} serve: the server's dependencies are not installed ({', '.join(missing)}); "
              "install them with: pip install 'handspring[server]'", file=sys.stderr)
        return 1
    from app.__main__ import main as serve_main

    return serve_main(argv, prog=f"{PROG} serve")


def weights(argv: list[str]) -> int:
    from handspring_models.weights.__main__ import main as weights_main

    return weights_main(argv, prog=f"{PROG} weights")


def models(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog=f"{PROG} models", description="The models and features this "
                                     "version serves: a feature is one model's modalities, or all of them.")
    parser.parse_args(argv)
    import handspring_models

    for spec in handspring_models.list_models():
        print(spec.name + (f"  (also: {', '.join(spec.aliases)})" if spec.aliases else ""))
        print(f"    {spec.description}")
        print(f"    licence: {spec.license}; vectors by default: "
              f"{'unit' if spec.normalize else 'raw'} (as Weaviate's own container)")
        for feature, modalities in spec.features.items():
            print(f"    {feature:<32} {', '.join(modalities)}")
    return 0


COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "serve": (serve, "run the HTTP service (Weaviate's /vectorize, OpenAI's /v1/embeddings)"),
    "weights": (weights, "download, convert, verify, list or make random weights folders"),
    "models": (models, "list the models and features"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROG} <command> [options]", "",
             "Handspring: multimodal embeddings (CLIP, ImageBind), inference only, fast on a plain CPU.", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "options:", "  -h, --help     this help; `handspring <command> --help` for a command's own",
              "  -V, --version  the version", "",
              "examples:",
              "  handspring weights download clip_vit_b_32 --out weights/clip",
              "  HANDSPRING_WEIGHTS_DIR=weights/clip handspring serve --port 8080",
              "  handspring weights random clip_vit_b_32 --out /tmp/demo   # a random-weight demo model"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(usage(), file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    if command in ("-h", "--help", "help"):
        print(usage())
        return 0
    if command in ("-V", "--version"):
        print(f"{PROG} {version()}")
        return 0
    if command not in COMMANDS:
        print(f"{PROG}: unknown command {command!r}; the commands are {', '.join(COMMANDS)} "
              f"(`{PROG} --help`)", file=sys.stderr)
        return 2
    return COMMANDS[command][0](rest)
