"""Embed a text and an image with plain httpx, through both APIs (OpenAI's and Weaviate's), and
print the cosine of the two vectors from each.

    pip install httpx
    python httpx_client.py [URL] [IMAGE]    # URL defaults to $HANDSPRING_URL, else http://localhost:8080
"""

import base64
import math
import os
import sys
from pathlib import Path

import httpx

url = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("HANDSPRING_URL", "http://localhost:8080")
image = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).resolve().parent.parent / "red-circle.png"
key = os.environ.get("HANDSPRING_API_KEY")
headers = {"Authorization": f"Bearer {key}"} if key else {}
image_b64 = base64.b64encode(image.read_bytes()).decode()
text = "a red circle"


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
    # OpenAI's API: errors come as {"error": {"message", "type", "param", "code"}}.
    model = client.get("/v1/models").raise_for_status().json()["data"][0]["id"]
    answer = client.post("/v1/embeddings", json={"model": model, "input": [text, {"image": image_b64}]})
    answer.raise_for_status()
    text_vector, image_vector = (item["embedding"] for item in answer.json()["data"])
    print(f"/v1/embeddings: cosine(text, image) = {cosine(text_vector, image_vector):.6f}")

    # Weaviate's API: {"texts": [...], "images": [base64, ...]} -> textVectors, imageVectors.
    answer = client.post("/vectorize", json={"texts": [text], "images": [image_b64]}).raise_for_status().json()
    print(f"/vectorize: cosine(text, image) = {cosine(answer['textVectors'][0], answer['imageVectors'][0]):.6f}")
