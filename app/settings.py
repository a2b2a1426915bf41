"""Every knob of the service, read from ``HANDSPRING_*`` environment variables in one place.

``Settings.from_env()`` validates everything at once and raises ``SettingsError`` listing every
bad variable, so a misconfigured container fails at start-up with one clear message instead of
misbehaving later. Empty variables count as unset.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import handspring_models
from handspring_models.inputs.image import DEFAULT_MAX_PIXELS

_CHECKOUT = Path(__file__).resolve().parents[1]

PREFIX = "HANDSPRING_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MiB = 1 << 20
MB = 1000 * 1000


class SettingsError(ValueError):
    """One or more HANDSPRING_* variables are invalid; the message names each of them."""


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (containers)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, max(1, int(quota + 0.5)))
    return max(1, cpus)


def available_memory_bytes() -> int:
    """Memory this process may use: the machine's, capped by a cgroup memory limit (containers)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        total = 4 << 30
    for path in [d / "memory.max" for d in _cgroup_dirs("")] + [d / "memory.limit_in_bytes" for d in _cgroup_dirs("memory")]:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:  # "max", or v1's huge "no limit" value
            total = int(text)
    return total


def default_prepared_mb() -> int:
    """A quarter of the memory this process may use, for decoded inputs waiting for the model:
    the weights, the runtime and the forward passes' activations need the rest."""
    return max(64, available_memory_bytes() // 4 // MB)


CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def _cgroup_dirs(controller: str, root: Path | None = None, proc_cgroup: Path | None = None) -> list[Path]:
    """This process's cgroup folders for a v1 ``controller`` ("" for the v2 unified hierarchy),
    its own first, then each ancestor up to the mount's root: a limit anywhere on that path
    applies. Inside a container (its own cgroup namespace) the path is "/" and only the root is
    left; without one (a systemd unit, a runtime sharing the host's namespace) the process's own
    cgroup sits below the root, and reading the root alone would see the whole node."""
    root = root or CGROUP_ROOT
    try:
        lines = (proc_cgroup or PROC_CGROUP).read_text().splitlines()
    except OSError:
        lines = []
    mounts = [root, root / "unified"] if controller == "" else [root / controller]
    relative = "/"
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if (controller == "" and controllers == "") or (controller and controller in controllers.split(",")):
            relative = path
            break
    folders = []
    for mount in mounts:
        if controller == "" and not (mount / "cgroup.controllers").exists():
            continue  # not a v2 hierarchy
        here = mount / relative.strip("/")
        while True:
            folders.append(here)
            if here == mount:
                break
            here = here.parent
    return folders


def _cgroup_cpu_quota(root: Path | None = None, proc_cgroup: Path | None = None) -> float | None:
    """The tightest CPU quota on this process's cgroup path, in CPUs; None where there is none."""
    quotas = []
    for folder in _cgroup_dirs("", root, proc_cgroup):  # cgroup v2: "max 100000" or "200000 100000"
        try:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            if quota != "max" and int(period) > 0:
                quotas.append(int(quota) / int(period))
        except (OSError, ValueError):
            pass
    for folder in _cgroup_dirs("cpu", root, proc_cgroup):  # cgroup v1
        try:
            quota = int((folder / "cpu.cfs_quota_us").read_text())
            period = int((folder / "cpu.cfs_period_us").read_text())
            if quota > 0 and period > 0:
                quotas.append(quota / period)
        except (OSError, ValueError):
            pass
    return min(quotas) if quotas else None


@dataclass(frozen=True)
class Settings:
    weights_dir: Path | None = None  # None: see weights_folder
    # A feature (clip_vit_b_32_image), or a model by its name or any alias (the whole model); kept
    # as the registry's canonical feature name.
    feature: str = "clip_vit_b_32"
    precision: str = "auto"
    # The engine of the forward pass: torch, or openvino (the openvino extra; each tower is
    # converted once and cached beside the weights).
    backend: str = "torch"
    threads: int = dataclasses.field(default_factory=available_cpus)  # torch threads, all forward passes together
    # Forward passes that run side by side, each on its share of the threads (app/slots.py).
    # 0: two where there are at least 2 threads, else one; one on the openvino backend, whose
    # passes take every thread of their own.
    inference_workers: int = 0
    preprocess_workers: int = dataclasses.field(default_factory=available_cpus)
    # How long a prepared item may wait for items of its modality still being decoded, to share
    # their forward pass; a lone request never waits (see app/engine.py).
    batch_window_ms: float = 100.0
    # Decoding and the forward pass take turns on the cores instead of stalling each other
    # (app/cpu_gate.py). Off pays only where decoding has cores of its own.
    take_turns: bool = True
    max_batch: int = 32
    max_body_bytes: int = 64 * MiB
    max_items: int = 256
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    max_media_seconds: float = 600.0  # ImageBind: longest audio or video
    # ImageBind, per request: how many videos, and how many seconds of audio in all (each of a
    # request's n audio files may be up to this / n seconds long).
    max_videos_per_request: int = 16
    max_audio_seconds_per_request: float = 1800.0
    # Admission (app/admission.py): requests in flight past this cap are refused with 429 before
    # their body is read. Weaviate keeps at most 2 x its CPUs requests in flight per import.
    max_concurrent_requests: int = 256
    # Decoded inputs (waiting for the model or in it) may hold at most this many megabytes; an
    # input waits for room before it is decoded (app/budget.py).
    max_prepared_mb: int = dataclasses.field(default_factory=default_prepared_mb)
    # A request not answered by then is abandoned and answered 503 (Weaviate gives up at 50 s).
    request_timeout_s: float = 45.0
    # On SIGTERM, in-flight requests get this long to finish (Kubernetes kills at 30 s).
    drain_timeout_s: float = 25.0
    # Keep-alive connections answered "Connection: close" after this many requests or seconds, so
    # clients reconnect and an L4 balancer (kube-proxy) spreads them (app/connection_recycling.py).
    # 0: no limit.
    max_requests_per_connection: int = 0
    max_connection_age_s: float = 0.0
    # Unit vectors (true) or the model's raw outputs (false); unset: what Weaviate's own container
    # returns for the model (the registry's convention, shown in /meta).
    normalize: bool | None = None
    log_level: str = "INFO"
    # uvicorn's line per request: off by default (at ~100 requests/s it costs CPU the model needs;
    # /metrics counts requests and latencies instead).
    access_log: bool = False
    # HANDSPRING_API_KEY, comma-separated: any of them, as ``Authorization: Bearer <key>``, opens
    # the embedding routes (app/auth.py). Empty: no authentication (Weaviate's modules send no key).
    api_keys: tuple[str, ...] = dataclasses.field(default=(), repr=False)
    # The try-it page on GET / (app/ui.py); off answers 404 there, as any unknown route.
    ui: bool = True

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "feature", handspring_models.find_feature(self.feature)[1])
        except (handspring_models.UnknownModelError, TypeError):
            pass  # reported by problems()
        if self.inference_workers == 0 and isinstance(self.threads, int) and self.threads >= 1:
            object.__setattr__(self, "inference_workers", 1 if self.backend == "openvino" else min(2, self.threads))
        problems = self.problems()
        if problems:
            raise SettingsError("invalid settings: " + "; ".join(problems))

    def problems(self) -> list[str]:
        p: list[str] = []
        if self.feature not in handspring_models.FEATURES:
            p.append(f"{PREFIX}FEATURE={self.feature!r} is not a feature or model; known: "
                     f"{', '.join(handspring_models.FEATURES)} (or a model's alias: `python -m handspring_models.weights list`)")
        if self.precision not in handspring_models.PRECISIONS:
            p.append(f"{PREFIX}PRECISION={self.precision!r} must be one of {', '.join(handspring_models.PRECISIONS)}")
        if self.backend not in handspring_models.BACKENDS:
            p.append(f"{PREFIX}BACKEND={self.backend!r} must be one of {', '.join(handspring_models.BACKENDS)}")
        # inference_workers: 0 (automatic) became a count in __post_init__ unless threads is bad too
        for name, minimum in (("threads", 1), ("inference_workers", 0), ("preprocess_workers", 1), ("max_batch", 1),
                              ("max_body_bytes", 1), ("max_items", 1), ("max_image_pixels", 1),
                              ("max_videos_per_request", 1), ("max_concurrent_requests", 1), ("max_prepared_mb", 1),
                              ("max_requests_per_connection", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                p.append(f"{PREFIX}{name.upper()}={value!r} must be an integer >= {minimum}")
        if isinstance(self.inference_workers, int) and isinstance(self.threads, int) and self.inference_workers > self.threads >= 1:
            p.append(f"{PREFIX}INFERENCE_WORKERS={self.inference_workers} is more than {PREFIX}THREADS={self.threads}: "
                     "each forward pass needs a thread of its own")
        if not isinstance(self.batch_window_ms, (int, float)) or not 0 <= self.batch_window_ms <= 10_000:
            p.append(f"{PREFIX}BATCH_WINDOW_MS={self.batch_window_ms!r} must be a number of milliseconds in [0, 10000]")
        if not isinstance(self.max_media_seconds, (int, float)) or not 0 < self.max_media_seconds <= 86_400:
            p.append(f"{PREFIX}MAX_MEDIA_SECONDS={self.max_media_seconds!r} must be a number of seconds in (0, 86400]")
        for name, upper in (("max_audio_seconds_per_request", 86_400 * 256), ("request_timeout_s", 86_400),
                            ("drain_timeout_s", 86_400)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= upper:
                p.append(f"{PREFIX}{name.upper()}={value!r} must be a number of seconds in (0, {upper}]")
        age = self.max_connection_age_s
        if isinstance(age, bool) or not isinstance(age, (int, float)) or not 0 <= age <= 86_400:
            p.append(f"{PREFIX}MAX_CONNECTION_AGE_S={age!r} must be a number of seconds in [0, 86400] (0: no limit)")
        if self.log_level not in LOG_LEVELS:
            p.append(f"{PREFIX}LOG_LEVEL={self.log_level!r} must be one of {', '.join(LOG_LEVELS)}")
        for number, key in enumerate(self.api_keys, 1):  # never the key itself in the message
            if not isinstance(key, str) or not _API_KEY.fullmatch(key):
                p.append(f"{PREFIX}API_KEY: key {number} must be printable ASCII without spaces or commas")
        return p

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict = {}
        problems: list[str] = []

        def raw(name: str) -> str | None:
            value = env.get(PREFIX + name)
            return value.strip() if value is not None and value.strip() else None

        if (v := raw("WEIGHTS_DIR")) is not None:
            values["weights_dir"] = Path(v).expanduser()
        if (v := raw("FEATURE")) is not None:
            values["feature"] = v
        if (v := raw("PRECISION")) is not None:
            values["precision"] = v.lower()
        if (v := raw("BACKEND")) is not None:
            values["backend"] = v.lower()
        if (v := raw("LOG_LEVEL")) is not None:
            values["log_level"] = v.upper()
        if (v := raw("API_KEY")) is not None:
            values["api_keys"] = tuple(key.strip() for key in v.split(",") if key.strip())
        for field in ("TAKE_TURNS", "NORMALIZE", "ACCESS_LOG", "UI"):
            if (v := raw(field)) is not None:
                try:
                    values[field.lower()] = _bool(v)
                except ValueError as e:
                    problems.append(f"{PREFIX}{field}={v!r}: {e}")
        for field, parse in (("THREADS", _int), ("INFERENCE_WORKERS", _int), ("PREPROCESS_WORKERS", _int), ("MAX_BATCH", _int),
                             ("MAX_ITEMS", _int), ("MAX_IMAGE_PIXELS", _int), ("MAX_BODY_BYTES", _bytes),
                             ("BATCH_WINDOW_MS", _float), ("MAX_MEDIA_SECONDS", _float),
                             ("MAX_VIDEOS_PER_REQUEST", _int), ("MAX_AUDIO_SECONDS_PER_REQUEST", _float),
                             ("MAX_CONCURRENT_REQUESTS", _int), ("MAX_PREPARED_MB", _int),
                             ("REQUEST_TIMEOUT_S", _float), ("DRAIN_TIMEOUT_S", _float),
                             ("MAX_REQUESTS_PER_CONNECTION", _int), ("MAX_CONNECTION_AGE_S", _float)):
            if (v := raw(field)) is None:
                continue
            try:
                values[field.lower()] = parse(v)
            except ValueError as e:
                problems.append(f"{PREFIX}{field}={v!r}: {e}")
        try:
            settings = cls(**values)
        except SettingsError as e:
            problems.extend(str(e).removeprefix("invalid settings: ").split("; "))
        if problems:
            raise SettingsError("invalid settings: " + "; ".join(problems))
        return settings

    @property
    def model(self) -> str:
        return handspring_models.FEATURES[self.feature][0]

    @property
    def weights_folder(self) -> Path:
        """The folder served: HANDSPRING_WEIGHTS_DIR; else, in a checkout, weights/<model>/ (where
        `make run` and `make download` put it); else, installed, the library's own default
        ($HANDSPRING_HOME/<model>, where `handspring weights download` puts it)."""
        if self.weights_dir is not None:
            return self.weights_dir
        if (_CHECKOUT / "pyproject.toml").is_file():
            return _CHECKOUT / "weights" / self.model
        return handspring_models.default_weights_dir(self.model)

    @property
    def log_level_number(self) -> int:
        return getattr(logging, self.log_level)

    def public(self) -> dict:
        """The settings as plain JSON-able values (for logs and /meta)."""
        out = dataclasses.asdict(self)
        out["weights_dir"] = str(self.weights_dir) if self.weights_dir is not None else None
        out["api_keys"] = len(self.api_keys)  # how many, never the keys
        return out


def _int(text: str) -> int:
    try:
        return int(text.replace("_", ""))
    except ValueError:
        raise ValueError("not an integer") from None


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("not a boolean (true/false, 1/0, yes/no, on/off)")


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("not a number") from None
    if math.isnan(value):
        raise ValueError("not a number")
    return value


_API_KEY = re.compile(r"[!-+\--~]+")  # printable ASCII but space and comma: a Bearer token's characters

_SIZE = re.compile(r"^\s*(\d[\d_]*)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "ki": 1 << 10, "kib": 1 << 10, "m": 1000**2, "mb": 1000**2,
          "mi": MiB, "mib": MiB, "g": 1000**3, "gb": 1000**3, "gi": 1 << 30, "gib": 1 << 30}


def _bytes(text: str) -> int:
    """``67108864``, ``64MiB``, ``64MB``, ``512KiB``..."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError("not a size in bytes (e.g. 67108864 or 64MiB)")
    return int(m.group(1).replace("_", "")) * _UNITS[(m.group(2) or "").lower()]
