"""The wire format of Weaviate's multi2vec modules, and turning raw request bytes into inputs.

Request  ``{"texts": [str], "images": [base64], "audio": [...], "video": [...], "imu": [...],
           "thermal": [...], "depth": [...]}``  every field optional (Weaviate omits empty ones);
Response ``{"textVectors": [[float]], "imageVectors": [[float]], ...}``  one vector per input,
in input order. ``textVectors`` and ``imageVectors`` are always present (as the reference CLIP
container answers), plus ``<modality>Vectors`` for every other modality the loaded feature serves.

The body is parsed here from raw bytes rather than by FastAPI: Weaviate's bind client sends no
Content-Type header, which FastAPI's body parsing would reject.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, StrictStr, ValidationError

from handspring_models import InvalidInputError

from .errors import ApiError

# modality (library name) -> request field, response field
FIELDS: dict[str, str] = {
    "text": "texts",
    "image": "images",
    "audio": "audio",
    "video": "video",
    "imu": "imu",
    "thermal": "thermal",
    "depth": "depth",
}
VECTOR_FIELDS: dict[str, str] = {m: f"{m}Vectors" for m in FIELDS}
ALWAYS_ANSWERED = ("text", "image")


class VectorizeRequest(BaseModel):
    """All fields optional; ``null`` counts as absent. Unknown fields are refused (a typo such as
    ``"text"`` would otherwise silently embed nothing)."""

    model_config = ConfigDict(extra="forbid")

    texts: list[StrictStr] | None = None
    images: list[StrictStr] | None = None
    audio: list[StrictStr] | None = None
    video: list[StrictStr] | None = None
    imu: list[StrictStr] | None = None
    thermal: list[StrictStr] | None = None
    depth: list[StrictStr] | None = None

    def inputs(self) -> dict[str, list[str]]:
        """modality -> its items, for the fields present in the body (in FIELDS order)."""
        return {m: getattr(self, f) for m, f in FIELDS.items() if getattr(self, f) is not None}


class VectorizeResponse(BaseModel):
    """Documentation of the answer (the service writes it directly; see ``encode_response``)."""

    textVectors: list[list[float]]
    imageVectors: list[list[float]]
    audioVectors: list[list[float]] | None = None
    videoVectors: list[list[float]] | None = None
    imuVectors: list[list[float]] | None = None
    thermalVectors: list[list[float]] | None = None
    depthVectors: list[list[float]] | None = None


class ErrorResponse(BaseModel):
    error: str


# ---------------------------------------------------------------- parsing

def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _location(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def _describe(error: dict) -> str:
    loc, kind, value = _location(error.get("loc", ())), error.get("type"), error.get("input")
    if kind == "extra_forbidden":
        return f"{loc}: unknown field; the fields are {', '.join(FIELDS.values())}"
    if kind == "string_type":
        return f"{loc}: must be a string, not {json_type(value)}"
    if kind == "list_type":
        return f"{loc}: must be an array of strings, not {json_type(value)}"
    return f"{loc}: {error.get('msg')}"


def load_json_object(body: bytes, example: str) -> dict:
    """The body as a JSON object, or ApiError 400 (not JSON) / 422 (not an object). ``example``
    shows the expected body in the messages."""
    if not body.strip():
        raise ApiError(400, f"empty body: expected a JSON object such as {example}")
    try:
        data = json.loads(body)
    except UnicodeDecodeError:
        raise ApiError(400, "malformed JSON: the body is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise ApiError(400, f"malformed JSON: {e}") from None
    except RecursionError:
        raise ApiError(400, "malformed JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(422, f"the body must be a JSON object such as {example}, not {json_type(data)}")
    return data


def parse_vectorize(body: bytes) -> VectorizeRequest:
    data = load_json_object(body, '{"texts": [...], "images": [...]}')
    try:
        return VectorizeRequest.model_validate(data)
    except ValidationError as e:
        errors = e.errors(include_url=False)
        message = "; ".join(_describe(err) for err in errors[:5])
        if len(errors) > 5:
            message += f"; and {len(errors) - 5} more"
        raise ApiError(422, message) from None


_DATA_URL = re.compile(r"data:[^,;]*(?:;[^,;=]+=[^,;]*)*;base64,", re.IGNORECASE)
_URLSAFE = str.maketrans("-_", "+/")


def decode_base64(text: str) -> bytes:
    """Plain base64 as Weaviate sends it; also a ``data:<type>;base64,`` prefix, line breaks,
    the URL-safe alphabet and missing padding. Raises InvalidInputError otherwise."""
    if text.startswith(("data:", "DATA:", "Data:")):
        m = _DATA_URL.match(text, 0, 512)
        if m is None:
            raise InvalidInputError("invalid data URL: expected data:<type>;base64,<data>")
        text = text[m.end():]
    if any(c in text for c in " \n\r\t"):
        text = "".join(text.split())
    if not text:
        raise InvalidInputError("empty: expected base64-encoded file contents")
    if "-" in text or "_" in text:
        text = text.translate(_URLSAFE)
    remainder = len(text) % 4
    if remainder:
        text += "=" * (4 - remainder)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidInputError(f"invalid base64: {e}") from None


# ---------------------------------------------------------------- answering

def encode_response(vectors: dict[str, np.ndarray], served: tuple[str, ...]) -> bytes:
    """JSON body: ``<modality>Vectors`` for text and image and every served modality. The vectors
    must be finite (``Service.vectorize`` checks; orjson would write NaN as null)."""
    out: dict[str, object] = {}
    for modality in FIELDS:
        if modality in ALWAYS_ANSWERED or modality in served or modality in vectors:
            array = vectors.get(modality)
            if array is None or len(array) == 0:
                out[VECTOR_FIELDS[modality]] = []
            else:
                # float32 written as the shortest decimal that reads back as the same float32
                out[VECTOR_FIELDS[modality]] = np.ascontiguousarray(array, dtype=np.float32)
    return orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY)
