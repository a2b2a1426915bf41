"""Embed a text and an image with the official OpenAI SDK, and print their cosine.

    pip install openai
    python openai_sdk.py [URL] [IMAGE]    # URL defaults to $HANDSPRING_URL, else http://localhost:8080
"""

import base64
import math
import os
import sys
from pathlib import Path

from openai import OpenAI

url = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("HANDSPRING_URL", "http://localhost:8080")
image = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).resolve().parent.parent / "red-circle.png"

# The SDK insists on a key: any will do, unless the server was started with HANDSPRING_API_KEY.
client = OpenAI(base_url=f"{url}/v1", api_key=os.environ.get("HANDSPRING_API_KEY", "none"))
model = client.models.list().data[0].id

# A text as a string, an image as {"image": base64 or a data: URL}; one vector each, in order.
image_b64 = base64.b64encode(image.read_bytes()).decode()
response = client.embeddings.create(model=model, input=["a red circle", {"image": image_b64}])  # type: ignore[list-item]
text_vector, image_vector = (item.embedding for item in response.data)


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


print(f"{model}, {len(text_vector)} dimensions, {response.usage.prompt_tokens} tokens")
print(f"/v1/embeddings (openai SDK): cosine(text, image) = {cosine(text_vector, image_vector):.6f}")
