"""Command line for weights folders::

    python -m handspring_models.weights list [DIR]
    python -m handspring_models.weights download clip_vit_b_32 [--out DIR]
    python -m handspring_models.weights convert SRC --model clip_vit_b_32 --out DIR
    python -m handspring_models.weights convert imagebind_huge.pth --model imagebind_huge --out DIR
    python -m handspring_models.weights verify DIR
    python -m handspring_models.weights random clip_vit_b_32 --out DIR   # demo/benchmark only
    python -m handspring_models.weights ensure clip_vit_b_32 --out DIR   # what `make run` uses
    python -m handspring_models.weights compile DIR --backend openvino   # convert ahead of the first start

A model is named by its registry name or any alias (``python -m handspring_models.weights list``).
The same commands are ``handspring weights ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..registry import find_model, list_models
from . import (CONFIG, MANIFEST, WeightsError, convert, default_weights_dir, download, ensure, home, random_weights,
               read_config, verify, write_atomically)


def _models_table() -> str:
    rows = [("model", "modalities", "weaviate default", "licence", "aliases")]
    for spec in list_models():
        rows.append((spec.name, ",".join(spec.modalities), "unit vectors" if spec.normalize else "raw",
                     spec.license, ", ".join(spec.aliases)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in rows)


def list_folders(root: Path) -> None:
    """One line per weights folder under ``root``, from its config and manifest (sizes, not
    checksums: ``verify`` reads every byte)."""
    folders = sorted(p.parent for p in root.glob(f"*/{CONFIG}")) if root.is_dir() else []
    print(f"weights folders in {root}:" if folders else f"no weights folders in {root}")
    for folder in folders:
        try:
            config = json.loads((folder / CONFIG).read_text())
            files = json.loads((folder / MANIFEST).read_text())["files"]
        except (OSError, ValueError, KeyError) as e:
            print(f"  {folder}  unreadable: {e}")
            continue
        complete = all((folder / name).is_file() and (folder / name).stat().st_size == entry["bytes"]
                       for name, entry in files.items())
        size = sum(entry["bytes"] for entry in files.values()) / 1e6
        print(f"  {folder}  {config.get('model')}  {size:.0f} MB  {'complete' if complete else 'INCOMPLETE'}"
              f"  source: {config.get('source')}  licence: {config.get('license')}")


def parser(prog: str = "python -m handspring_models.weights") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog,
                                description="Make, fetch and check Handspring weights folders.",
                                epilog="Models: `list` shows every name and alias.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    c = sub.add_parser("list", help="the models of the registry (aliases, licences), and the weights folders in DIR")
    c.add_argument("root", type=Path, nargs="?", metavar="DIR",
                   help="default: the library's cache, $HANDSPRING_HOME (~/.cache/handspring)")
    c = sub.add_parser("download", help="fetch the official checkpoint (Hugging Face Hub or the authors' URL) "
                                        "and convert it")
    c.add_argument("model", help="a model's name or alias")
    c.add_argument("--out", type=Path, help="default: the library's cache, $HANDSPRING_HOME/<model> "
                                            "(~/.cache/handspring/<model>)")
    c = sub.add_parser("convert", help="convert a checkpoint in the model's published format")
    c.add_argument("src", type=Path, help="a Hugging Face folder, an open_clip or sentence-transformers folder, "
                                          "an OpenAI .pt or the official imagebind_huge.pth, as the model is published")
    c.add_argument("--model", required=True, help="a model's name or alias")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--merges", type=Path, help="CLIP BPE merges (merges.txt or bpe_simple_vocab_16e6.txt.gz) "
                                               "when SRC has none beside it")
    c.add_argument("--image-src", type=Path, help="the image tower's folder, for a model published as two folders")
    c = sub.add_parser("verify", help="check a weights folder against its manifest")
    c.add_argument("folder", type=Path)
    c = sub.add_parser("random", help="write a random-weight model of the real shape (demos, benchmarks)")
    c.add_argument("model")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("ensure", help="print the folder to serve, downloading it first if needed")
    c.add_argument("model")
    c.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("compile", help="convert a weights folder's towers for a backend now, into DIR/<backend>, "
                                       "so that the first start does not pay it")
    c.add_argument("folder", type=Path, metavar="DIR")
    c.add_argument("--backend", default="openvino", choices=["openvino"])
    c.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="also compile for this precision into OpenVINO's cache (default fp32)")
    return p


def compile_folder(folder: Path, backend: str, precision: str) -> None:
    import time

    from .. import load

    model = read_config(folder).get("model")
    start = time.perf_counter()
    embedder = load(model, weights_dir=folder, precision=precision, backend=backend)
    print(f"{folder}: {embedder.model_name} ({', '.join(embedder.modalities)}) ready for {backend} "
          f"in {time.perf_counter() - start:.1f} s")


def main(argv: list[str] | None = None, prog: str = "python -m handspring_models.weights") -> int:
    args = parser(prog).parse_args(argv)
    try:
        if args.command == "list":
            print(_models_table() + "\n")
            list_folders(args.root or home())
        elif args.command == "download":
            out = args.out or default_weights_dir(find_model(args.model).name)
            write_atomically(out, lambda staging: download(args.model, staging))
        elif args.command == "convert":
            write_atomically(args.out, lambda staging: convert(args.src, args.model, staging, merges=args.merges,
                                                                image_src=args.image_src))
        elif args.command == "random":
            write_atomically(args.out, lambda staging: random_weights(args.model, staging, args.seed))
        elif args.command == "ensure":
            print(ensure(args.model, args.out))
        elif args.command == "compile":
            compile_folder(args.folder, args.backend, args.precision)
        else:
            problems = verify(args.folder)
            for problem in problems:
                print(problem, file=sys.stderr)
            if problems:
                return 1
            print(f"{args.folder}: all files match the manifest")
    except (WeightsError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
