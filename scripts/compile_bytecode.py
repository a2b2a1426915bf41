"""Bytecode for the image: only for the modules the service imports (run at build time, as root).

The server runs as a user that cannot write __pycache__, so without bytecode on disk every start
compiles torch and the web stack again, in memory (seconds). Compiling all of site-packages
costs ~170 MB of .pyc, mostly for modules that `import torch` and the service never import
(sympy, networkx, torch._inductor, torch._dynamo...). So this imports what the service imports at
start-up and on its first requests (every module of app/ and handspring_models/, the parts of
uvicorn that its defaults pick, Pillow's image plugins, PyAV, the HEALTHCHECK's urllib) and
compiles exactly those modules' files. A module imported later all the same just compiles in
memory, as it would without bytecode.

Invalidation mode ``unchecked-hash``: the image's files never change, and the default timestamp
check would make Python ignore the bytecode of any file whose modification time a COPY between
stages did not keep. A file this Python cannot parse cannot be imported either, so it is skipped
(torch ships torch/testing/_internal/py312_intrinsics.py in Python 3.12 syntax).

    python compile_bytecode.py ROOT...     # the service's modules under the ROOTs and in the standard library

The standard library is included, for a base image that ships it without bytecode.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import py_compile
import sys
import sysconfig
from pathlib import Path

SERVICE_PACKAGES = ("app", "handspring_models")
# The HEALTHCHECK; decoding on first requests; the openvino backend where the image has it.
ALSO_IMPORTED = ("urllib.request", "PIL.Image", "av", "openvino")
# Parts of the library the service never imports, whose dependencies (pyarrow, tqdm, ray) the
# image leaves out: compiled like every file, not imported.
NOT_THE_SERVICE = ("handspring_models.embed", "handspring_models.ray")


def import_the_service() -> None:
    for name in SERVICE_PACKAGES:
        package = importlib.import_module(name)
        for module in pkgutil.walk_packages(package.__path__, name + "."):
            if module.name in NOT_THE_SERVICE or module.name.startswith(tuple(f"{n}." for n in NOT_THE_SERVICE)):
                continue
            importlib.import_module(module.name)
    for name in ALSO_IMPORTED:
        try:
            importlib.import_module(name)
        except ImportError:  # PyAV is only needed by ImageBind, openvino by its backend
            pass
    import uvicorn
    from PIL import Image

    Image.init()  # every image plugin, as the first decode imports them
    # What uvicorn.run imports for python -m app's settings (loop, http, ws, lifespan: "auto").
    uvicorn.Config(app=lambda scope, receive, send: None).load()


def compile_one(path: str) -> str | None:
    """None when compiled; the reason when this Python cannot parse the file."""
    try:
        py_compile.compile(path, doraise=True, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    except py_compile.PyCompileError as e:
        if isinstance(e.exc_value, SyntaxError):
            return f"{e.exc_type_name}: {e.exc_value.msg} (line {e.exc_value.lineno})"
        raise
    return None


def main(roots: list[str]) -> int:
    sys.dont_write_bytecode = True  # this script writes it, in its own mode
    sys.path.insert(0, os.getcwd())  # as `python -m app` does, run from the WORKDIR
    import_the_service()
    roots = [*roots, sysconfig.get_paths()["stdlib"]]
    resolved = [Path(r).resolve() for r in roots]
    sources = {Path(m.__file__) for m in list(sys.modules.values())
               if isinstance(getattr(m, "__file__", None), str) and m.__file__.endswith(".py")}
    # (a few modules carry a made-up relative __file__: only real files under a root count)
    files = sorted(str(p.resolve()) for p in sources
                   if p.is_absolute() and p.is_file() and any(p.resolve().is_relative_to(r) for r in resolved))
    skipped = 0
    for path in files:
        reason = compile_one(path)
        if reason:
            skipped += 1
            print(f"skipped (not this Python's syntax): {path}: {reason}", file=sys.stderr)
    print(f"compiled {len(files) - skipped} modules under {', '.join(roots)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
