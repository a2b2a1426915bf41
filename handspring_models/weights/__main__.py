"""Command line: ``python -m handspring_models.weights {download,convert,verify,random,list,ensure}``
(also ``handspring weights ...``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import (CONFIG, HUB_SOURCES, MANIFEST, MODELS, REPO_WEIGHTS, WeightsError, _write_atomically, convert,
               download, ensure, random_weights, verify)
from . import __doc__ as package_doc


def main(argv: list[str] | None = None, prog: str = "python -m handspring_models.weights") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=package_doc.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("download",
                       help="fetch the official checkpoint (Hugging Face Hub or the authors' URL) and convert it")
    p.add_argument("model", choices=MODELS)
    p.add_argument("--out", type=Path, help="default: weights/<model>/ in this repository")
    p = sub.add_parser("convert",
                       help="convert a Hugging Face CLIPModel folder, an OpenAI .pt, or the official imagebind_huge.pth")
    p.add_argument("src", type=Path)
    p.add_argument("--model", required=True, choices=MODELS)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--merges", type=Path, help="BPE merges (merges.txt or bpe_simple_vocab_16e6.txt.gz) "
                                               "when SRC has none beside it")
    p = sub.add_parser("verify", help="check a weights folder against its manifest")
    p.add_argument("folder", type=Path)
    p = sub.add_parser("random", help="write a random-weight model of the real shape (demos, benchmarks)")
    p.add_argument("model", choices=MODELS)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("list", help="the weights folders in a directory (default: where download puts them), "
                                    "and the models download knows")
    p.add_argument("root", type=Path, nargs="?", default=REPO_WEIGHTS)
    p = sub.add_parser("ensure", help="print the folder to serve, downloading it first if needed")
    p.add_argument("model", choices=MODELS)
    p.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    try:
        if args.command == "download":
            out = args.out or REPO_WEIGHTS / args.model
            _write_atomically(out, lambda staging: download(args.model, staging))
        elif args.command == "convert":
            _write_atomically(args.out, lambda staging: convert(args.src, args.model, staging, args.merges))
        elif args.command == "random":
            _write_atomically(args.out, lambda staging: random_weights(args.model, staging, args.seed))
        elif args.command == "ensure":
            print(ensure(args.model, args.out))
        elif args.command == "list":
            list_folders(args.root)
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


def list_folders(root: Path) -> None:
    """What is under ``root`` (one line per weights folder, from its config and manifest; sizes,
    not checksums: ``verify`` reads every byte), then what ``download`` can fetch."""
    folders = sorted(p.parent for p in root.glob(f"*/{CONFIG}")) if root.is_dir() else []
    env = os.environ.get("HANDSPRING_WEIGHTS_DIR")
    if env and (Path(env) / CONFIG).is_file() and Path(env).resolve() not in {f.resolve() for f in folders}:
        folders.append(Path(env))
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
    print("download fetches: " + ", ".join(f"{m} ({HUB_SOURCES[m]['license']})" for m in MODELS))


if __name__ == "__main__":
    sys.exit(main())
