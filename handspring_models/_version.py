"""The version of the ``handspring`` distribution: from the installed package's metadata, else
(a checkout that was never installed, such as the Docker image's /app) from the pyproject.toml
beside the package."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "handspring"
UNKNOWN = "0+unknown"


def distribution_version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pass
    try:
        pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
        return str(pyproject["project"]["version"])
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError):
        return UNKNOWN
