"""The wire format of OpenAI's embeddings API (``POST /v1/embeddings``, ``GET /v1/models``).

Request  ``{"model": str, "input": ..., "encoding_format": "float" | "base64", "dimensions": int,
           "user": str}``; ``input`` is a string, or an array whose items are strings (texts) or
           objects with one field, ``{"text": ...}``, ``{"image": "<base64 or data: URL>"}``, and
           for ImageBind ``audio``, ``video``, ``depth``, ``thermal``, ``imu`` (base64 files).
Response ``{"object": "list", "data": [{"object": "embedding", "index": i, "embedding": [...]}],
           "model": str, "usage": {"prompt_tokens": n, "total_tokens": n}}``, in input order;
           with ``base64``, each embedding is its little-endian float32 bytes in base64.

Token-id arrays (``[1, 2, 3]`` or ``[[1, 2], [3]]``), which OpenAI accepts, are refused: they
would be ids of OpenAI's tokenizer (tiktoken; LangChain's ``OpenAIEmbeddings`` sends them unless
``check_embedding_ctx_length=False``), which mean other words in our models' vocabularies.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import orjson
from pydantic import BaseModel

from .errors import ApiError
from .schemas import FIELDS, json_type, load_json_object

EXAMPLE = '{"model": "clip_vit_b_32", "input": ["a photo of a dog"]}'
KNOWN_FIELDS = ("model", "input", "encoding_format", "dimensions", "user")
ITEM_KINDS = tuple(FIELDS)  # text, image, audio, video, imu, thermal, depth
TOKEN_IDS_REFUSED = (
    "input: token-id arrays are not accepted: they are ids of OpenAI's tokenizer, which mean other "
    "words to this model's own tokenizer. Send the texts themselves. LangChain's OpenAIEmbeddings sends "
    "token ids by default: create it with check_embedding_ctx_length=False")


@dataclass
class EmbeddingsRequest:
    model: str
    items: list[tuple[str, str]]  # (modality, text or base64 file), in input order
    encoding_format: str = "float"
    dimensions: int | None = None

    # modality -> its items, and where each stands in the input (for the answer's order)
    inputs: dict[str, list[str]] = field(init=False)
    positions: dict[str, list[int]] = field(init=False)

    def __post_init__(self) -> None:
        self.inputs, self.positions = {}, {}
        for index, (modality, value) in enumerate(self.items):
            self.inputs.setdefault(modality, []).append(value)
            self.positions.setdefault(modality, []).append(index)


def _bad(message: str, param: str) -> ApiError:
    return ApiError(400, message, param=param)


def parse_embeddings(body: bytes) -> EmbeddingsRequest:
    data = load_json_object(body, EXAMPLE)
    unknown = [name for name in data if name not in KNOWN_FIELDS]
    if unknown:
        raise _bad(f"{unknown[0]}: unknown field; the fields are {', '.join(KNOWN_FIELDS)}", unknown[0])
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise _bad(f"model: required, the name of the model (GET /v1/models lists them), not {json_type(model)}",
                   "model")
    if "input" not in data:
        raise _bad("input: required, a string or an array of strings or of objects such as {\"image\": \"<base64>\"}",
                   "input")
    encoding = data.get("encoding_format")
    if encoding is None:
        encoding = "float"
    if encoding not in ("float", "base64"):
        raise _bad(f"encoding_format: must be \"float\" or \"base64\", not {encoding!r}", "encoding_format")
    dimensions = data.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int)):
        raise _bad(f"dimensions: must be an integer, not {json_type(dimensions)}", "dimensions")
    if data.get("user") is not None and not isinstance(data["user"], str):
        raise _bad(f"user: must be a string, not {json_type(data['user'])}", "user")
    return EmbeddingsRequest(model, parse_input(data["input"]), encoding, dimensions)


def parse_input(value) -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [("text", value)]
    if isinstance(value, dict):  # one object on its own, as one item
        return [_item(value, "input")]
    if not isinstance(value, list):
        raise _bad(f"input: must be a string or an array, not {json_type(value)}", "input")
    if not value:
        raise _bad("input: must not be empty", "input")
    if all(_is_int(v) for v in value) or all(isinstance(v, list) and all(_is_int(t) for t in v) for v in value):
        raise _bad(TOKEN_IDS_REFUSED, "input")
    return [_item(v, f"input[{i}]") for i, v in enumerate(value)]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _item(value, where: str) -> tuple[str, str]:
    if isinstance(value, str):
        return "text", value
    if isinstance(value, dict) and len(value) == 1:
        (kind, content), = value.items()
        if kind not in ITEM_KINDS:
            raise _bad(f"{where}: unknown kind of input {kind!r}; the kinds are {', '.join(ITEM_KINDS)}", "input")
        if not isinstance(content, str):
            raise _bad(f"{where}.{kind}: must be a string, not {json_type(content)}", "input")
        if kind != "text" and content.startswith(("http://", "https://")):
            raise _bad(f"{where}.{kind}: URLs are not fetched; send the file's contents in base64 "
                       "(or as a data: URL)", "input")
        return kind, content
    if isinstance(value, list) and value and all(_is_int(t) for t in value):
        raise _bad(TOKEN_IDS_REFUSED, "input")
    raise _bad(f"{where}: must be a string or an object with one field such as {{\"text\": \"...\"}} or "
               f"{{\"image\": \"<base64>\"}}, not {json_type(value)}", "input")


def encode_embeddings(vectors: np.ndarray, model: str, encoding_format: str, prompt_tokens: int) -> bytes:
    """``vectors``: float32 [n, dim] in input order -> the JSON answer. Floats are written as the
    shortest decimal that reads back as the same float32 (as /vectorize writes them)."""
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    if encoding_format == "base64":
        embeddings = [base64.b64encode(row.tobytes()).decode("ascii") for row in vectors]
    else:
        embeddings = list(vectors)
    answer = {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(embeddings)],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
    return orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)


def model_object(name: str, created: int) -> dict:
    return {"id": name, "object": "model", "created": created, "owned_by": "handspring"}


# ---------------------------------------------------------------- documentation (OpenAPI)

class EmbeddingsRequestDoc(BaseModel):
    model: str
    input: str | list[str | dict[str, str]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


class EmbeddingDoc(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str


class UsageDoc(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponseDoc(BaseModel):
    object: Literal["list"]
    data: list[EmbeddingDoc]
    model: str
    usage: UsageDoc


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorDoc(BaseModel):
    error: OpenAIErrorDetail
