"""Handspring behind Weaviate's multi2vec-bind module (ImageBind): objects with a caption, a sound
and a picture, searched by text and by sound.

    pip install -r requirements.txt
    docker compose -f docker-compose.bind.yml up -d --build
    python bind_example.py                                  # through Weaviate, weaviate-client v4
    python bind_example.py --direct http://localhost:9090   # straight to Handspring's /vectorize

The sounds are synthesised here (tones, chirps, noise) so the example needs no files: with the
real weights a "high whistle" caption should find the high tone; with random demo weights
(`make run MODEL=imagebind_huge` offline) the ranking means nothing, but every call works.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import math
import wave

COLLECTION = "HandspringSounds"
RATE = 16000


def _wav(samples: list[float]) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(b"".join(int(max(-1.0, min(1.0, s)) * 32767).to_bytes(2, "little", signed=True)
                               for s in samples))
    return buffer.getvalue()


def sounds() -> list[tuple[str, bytes]]:
    """(caption, WAV bytes), three seconds each."""
    import random

    n = 3 * RATE
    rng = random.Random(0)
    return [
        ("a high whistle", _wav([0.5 * math.sin(2 * math.pi * 2000 * i / RATE) for i in range(n)])),
        ("a low hum", _wav([0.5 * math.sin(2 * math.pi * 110 * i / RATE) for i in range(n)])),
        ("a siren rising in pitch", _wav([0.5 * math.sin(2 * math.pi * (300 + 600 * i / n) * i / RATE)
                                          for i in range(n)])),
        ("static noise", _wav([0.3 * rng.uniform(-1, 1) for _ in range(n)])),
    ]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def direct(url: str) -> None:
    """What Weaviate sends: one request per object (its fields), no Content-Type header."""
    import httpx

    items = sounds()
    with httpx.Client(base_url=url, timeout=120) as client:
        print("meta:", json.dumps({k: client.get("/meta").json().get(k) for k in ("model", "modalities", "weights")}))
        vectors = []
        for caption, audio in items:
            r = client.post("/vectorize", content=json.dumps({"texts": [caption], "audio": [b64(audio)]}).encode())
            r.raise_for_status()
            answer = r.json()
            # Weaviate combines an object's field vectors by their mean
            vectors.append([(t + a) / 2 for t, a in zip(answer["textVectors"][0], answer["audioVectors"][0])])
        for query in ("a high whistle", "noise"):
            q = client.post("/vectorize", content=json.dumps({"texts": [query]}).encode()).json()["textVectors"][0]
            ranked = sorted(zip(items, vectors), key=lambda iv: -cosine(q, iv[1]))
            print(f"near_text {query!r}:", [caption for (caption, _), _ in ranked])


def through_weaviate() -> None:
    import weaviate
    from weaviate.classes.config import Configure, DataType, Property
    from weaviate.classes.query import NearMediaType

    items = sounds()
    with weaviate.connect_to_local() as client:
        if client.collections.exists(COLLECTION):
            client.collections.delete(COLLECTION)
        sounds_ = client.collections.create(
            COLLECTION,
            properties=[Property(name="caption", data_type=DataType.TEXT),
                        Property(name="audio", data_type=DataType.BLOB)],
            vector_config=Configure.Vectors.multi2vec_bind(text_fields=["caption"], audio_fields=["audio"]),
        )
        sounds_.data.insert_many([{"caption": c, "audio": b64(a)} for c, a in items])
        for query in ("a high whistle", "noise"):
            hits = sounds_.query.near_text(query, limit=4).objects
            print(f"near_text {query!r}:", [o.properties["caption"] for o in hits])
        hits = sounds_.query.near_media(b64(items[1][1]), media_type=NearMediaType.AUDIO, limit=4).objects
        print("near_media (the low hum):", [o.properties["caption"] for o in hits])
        client.collections.delete(COLLECTION)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--direct", metavar="URL", help="call Handspring's /vectorize at URL instead of Weaviate")
    args = parser.parse_args()
    direct(args.direct) if args.direct else through_weaviate()


if __name__ == "__main__":
    main()
