"""Handspring behind Weaviate's multi2vec-clip module: import captioned images, search them by text and
by image.

    pip install -r requirements.txt
    docker compose up -d --build                       # Weaviate on :8080 (REST) and :50051 (gRPC)
    python example.py                                  # through Weaviate, with weaviate-client v4
    python example.py --direct http://localhost:9090   # straight to Handspring's /vectorize, no Weaviate

Images: --images DIR (captions from the file names, e.g. ``a_red_bicycle.jpg``), else scikit-image's
sample photos if scikit-image is installed, else simple shapes drawn with Pillow.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import math
import sys
from pathlib import Path

COLLECTION = "HandspringPhotos"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}
TEXT_QUERIES = ["a cat", "something to drink", "space travel", "a photographer"]


# ------------------------------------------------------------------ the images to import

def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def images_from_folder(folder: Path) -> list[tuple[str, bytes]]:
    """(caption, file bytes) for every image in ``folder``; the caption is the file name."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return [(p.stem.replace("_", " ").replace("-", " "), p.read_bytes()) for p in files]


def sample_photos() -> list[tuple[str, bytes]]:
    """scikit-image's bundled sample photos (no download), captioned by hand."""
    from PIL import Image
    from skimage import data

    photos = [
        ("an astronaut in a white space suit in front of a flag", data.astronaut),
        ("a tabby cat looking at the camera", data.chelsea),
        ("a cup of coffee on a saucer", data.coffee),
        ("a rocket on its launch pad", data.rocket),
        ("a man with a camera on a tripod, black and white", data.camera),
    ]
    return [(caption, _png(Image.fromarray(load()))) for caption, load in photos]


def drawn_shapes() -> list[tuple[str, bytes]]:
    """Simple pictures drawn with Pillow: enough to see text and image search agree."""
    from PIL import Image, ImageDraw

    def canvas():
        image = Image.new("RGB", (224, 224), "white")
        return image, ImageDraw.Draw(image)

    shapes = []
    image, draw = canvas()
    draw.ellipse((32, 32, 192, 192), fill="red")
    shapes.append(("a red circle", image))
    image, draw = canvas()
    draw.rectangle((40, 40, 184, 184), fill="blue")
    shapes.append(("a blue square", image))
    image, draw = canvas()
    draw.polygon([(112, 24), (200, 200), (24, 200)], fill="green")
    shapes.append(("a green triangle", image))
    image, draw = canvas()
    for y in range(0, 224, 28):
        draw.rectangle((0, y, 224, y + 13), fill="black")
    shapes.append(("black and white stripes", image))
    return [(caption, _png(image)) for caption, image in shapes]


def load_images(folder: Path | None) -> list[tuple[str, bytes]]:
    if folder is not None:
        return images_from_folder(folder)
    try:
        return sample_photos()
    except ImportError:
        return drawn_shapes()


def query_image(images: list[tuple[str, bytes]]) -> tuple[str, bytes]:
    """A query the collection does not hold verbatim: the second image, mirrored and cropped."""
    from PIL import Image, ImageOps

    caption, raw = images[min(1, len(images) - 1)]
    image = ImageOps.mirror(Image.open(io.BytesIO(raw)).convert("RGB"))
    w, h = image.size
    image = image.crop((w // 10, h // 10, w - w // 10, h - h // 10))
    return f"{caption} (mirrored, cropped)", _png(image)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


# ------------------------------------------------------------------ through Weaviate (weaviate-client v4)

def collection_config(name: str = COLLECTION) -> dict:
    """Keyword arguments for ``client.collections.create``: a caption (text) and an image (blob),
    both vectorized by multi2vec-clip, i.e. by Handspring."""
    from weaviate.classes.config import Configure, DataType, Property

    properties = [
        Property(name="caption", data_type=DataType.TEXT),
        Property(name="image", data_type=DataType.BLOB),
    ]
    if hasattr(Configure, "Vectors"):  # weaviate-client >= 4.16
        vectors = {"vector_config": Configure.Vectors.multi2vec_clip(image_fields=["image"], text_fields=["caption"])}
    else:  # older 4.x clients
        vectors = {"vectorizer_config": Configure.Vectorizer.multi2vec_clip(image_fields=["image"],
                                                                            text_fields=["caption"])}
    return {"name": name, "properties": properties, **vectors}


def run_weaviate(args, images: list[tuple[str, bytes]]) -> None:
    import weaviate
    from weaviate.classes.query import MetadataQuery
    from weaviate.exceptions import WeaviateConnectionError

    try:
        client = weaviate.connect_to_local(host=args.host, port=args.port, grpc_port=args.grpc_port)
    except WeaviateConnectionError as e:
        raise SystemExit(f"cannot reach Weaviate at {args.host}:{args.port} (gRPC {args.grpc_port}): {e}\n"
                         "Start it with `docker compose up -d --build` in weaviate-example/.") from None
    with client:
        modules = client.get_meta().get("modules", {})
        if "multi2vec-clip" not in modules:
            raise SystemExit(f"Weaviate at {args.host}:{args.port} has no multi2vec-clip module "
                             f"(modules: {', '.join(modules) or 'none'}); see docker-compose.yml")
        print("multi2vec-clip inference container /meta, as Weaviate reports it:")
        print("  " + json.dumps(modules["multi2vec-clip"])[:300])

        if client.collections.exists(args.collection):
            client.collections.delete(args.collection)
        photos = client.collections.create(**collection_config(args.collection))
        try:
            # Weaviate sends each object to POST /vectorize of the inference container.
            result = photos.data.insert_many([{"caption": c, "image": b64(raw)} for c, raw in images])
            if result.has_errors:
                for index, error in result.errors.items():
                    print(f"import of {images[index][0]!r} failed: {error.message}", file=sys.stderr)
                raise SystemExit(1)
            print(f"\nimported {len(images)} images into {args.collection}")

            for text in TEXT_QUERIES:
                response = photos.query.near_text(text, limit=3, return_properties=["caption"],
                                                  return_metadata=MetadataQuery(distance=True))
                print_hits(f"near_text {text!r}", [(o.properties["caption"], o.metadata.distance)
                                                   for o in response.objects])

            caption, raw = query_image(images)
            response = photos.query.near_image(b64(raw), limit=3, return_properties=["caption"],
                                               return_metadata=MetadataQuery(distance=True))
            print_hits(f"near_image [{caption}]", [(o.properties["caption"], o.metadata.distance)
                                                   for o in response.objects])
        finally:
            if not args.keep:
                client.collections.delete(args.collection)


def print_hits(title: str, hits: list[tuple[str, float]]) -> None:
    print(f"\n{title}")
    for caption, distance in hits:
        print(f"  {distance:7.4f}  {caption}")


# ------------------------------------------------------------------ straight to Handspring's /vectorize

def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def run_direct(args, images: list[tuple[str, bytes]]) -> None:
    import httpx

    try:
        _run_direct(args, images)
    except httpx.HTTPError as e:
        raise SystemExit(f"cannot talk to {args.direct}: {type(e).__name__}: {e}") from None


def _run_direct(args, images: list[tuple[str, bytes]]) -> None:
    """What Weaviate does, by hand: the same requests, then cosine distances (1 - cosine), which is
    what Weaviate's default vector index ranks by."""
    import httpx

    with httpx.Client(base_url=args.direct.rstrip("/"), timeout=args.timeout) as http:
        ready = http.get("/.well-known/ready")
        if ready.status_code >= 300:
            raise SystemExit(f"{args.direct}/.well-known/ready answered {ready.status_code}: not ready")
        meta = http.get("/meta").json()
        print(f"{args.direct}/meta: " + json.dumps(meta)[:300])
        if "random" in json.dumps(meta).lower():
            print("  (a random-weight demo model: the API works, the distances below mean nothing)")

        def vectorize(texts: list[str] | None = None, images_b64: list[str] | None = None) -> dict:
            body = {}  # Weaviate omits an empty field rather than sending []
            if texts:
                body["texts"] = texts
            if images_b64:
                body["images"] = images_b64
            response = http.post("/vectorize", json=body)
            payload = response.json()
            if response.status_code >= 400 or payload.get("error"):
                raise SystemExit(f"POST /vectorize failed ({response.status_code}): {payload.get('error', payload)}")
            return payload

        # Import: one request per object, its text and image fields together, as Weaviate sends them.
        # Weaviate then combines the vectors of one object (equal weights by default): their mean.
        objects = []
        for caption, raw in images:
            out = vectorize([caption], [b64(raw)])
            text_vector, image_vector = out["textVectors"][0], out["imageVectors"][0]
            objects.append((caption, [(t + i) / 2 for t, i in zip(text_vector, image_vector)]))
        print(f"\nvectorized {len(objects)} captioned images, {len(objects[0][1])} dimensions each")

        def search(title: str, query_vector: list[float]) -> None:
            ranked = sorted(((1 - cosine(query_vector, v), c) for c, v in objects))[:3]
            print_hits(title, [(c, d) for d, c in ranked])

        text_vectors = vectorize(TEXT_QUERIES)["textVectors"]  # near_text: the query text alone
        for text, vector in zip(TEXT_QUERIES, text_vectors):
            search(f"near_text {text!r}", vector)
        caption, raw = query_image(images)  # near_image: the query image alone
        search(f"near_image [{caption}]", vectorize(images_b64=[b64(raw)])["imageVectors"][0])


# ------------------------------------------------------------------ command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--direct", metavar="URL",
                        help="call Handspring's /vectorize at URL directly (e.g. http://localhost:9090) "
                             "instead of going through Weaviate")
    parser.add_argument("--images", type=Path, metavar="DIR", help="import the images in DIR")
    parser.add_argument("--host", default="localhost", help="Weaviate host (default localhost)")
    parser.add_argument("--port", type=int, default=8080, help="Weaviate REST port (default 8080)")
    parser.add_argument("--grpc-port", type=int, default=50051, help="Weaviate gRPC port (default 50051)")
    parser.add_argument("--collection", default=COLLECTION, help=f"collection name (default {COLLECTION})")
    parser.add_argument("--keep", action="store_true", help="keep the collection afterwards")
    parser.add_argument("--timeout", type=float, default=60.0, help="--direct: seconds per request")
    args = parser.parse_args(argv)

    images = load_images(args.images)
    if args.direct:
        run_direct(args, images)
    else:
        run_weaviate(args, images)
    return 0


if __name__ == "__main__":
    sys.exit(main())
