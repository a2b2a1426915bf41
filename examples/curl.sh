#!/usr/bin/env bash
# Embed a text and an image with curl through both APIs, OpenAI's and Weaviate's, and print the
# cosine of the two vectors (jq does the JSON and the maths).
#
#   bash curl.sh [URL] [IMAGE]        # URL defaults to $HANDSPRING_URL, else http://localhost:8080
#
# With HANDSPRING_API_KEY set, it is sent as a bearer token (the server wants it when it has one).
set -euo pipefail

URL=${1:-${HANDSPRING_URL:-http://localhost:8080}}
IMAGE=${2:-$(dirname "$0")/red-circle.png}
TEXT="a red circle"
auth=()
if [[ -n "${HANDSPRING_API_KEY:-}" ]]; then
    auth=(-H "Authorization: Bearer $HANDSPRING_API_KEY")
fi
post() {  # post PATH: the JSON body on stdin
    curl -sS --fail-with-body "${auth[@]}" -H "Content-Type: application/json" --data-binary @- "$URL$1"
}
cosine='def dot(a; b): [a, b] | transpose | map(.[0] * .[1]) | add;
        dot(.[0]; .[1]) / ((dot(.[0]; .[0]) * dot(.[1]; .[1])) | sqrt) | . * 1000000 | round / 1000000'
image_b64=$(mktemp)
trap 'rm -f "$image_b64"' EXIT
base64 -w0 "$IMAGE" >"$image_b64"   # macOS: base64 -i "$IMAGE"

# OpenAI's API: the model's name from /v1/models, then both inputs in one request.
model=$(curl -sS --fail-with-body "${auth[@]}" "$URL/v1/models" | jq -r '.data[0].id')
jq -n --arg model "$model" --arg text "$TEXT" --rawfile image "$image_b64" \
    '{model: $model, input: [$text, {image: $image}]}' \
    | post /v1/embeddings \
    | jq -r "[.data[].embedding] | $cosine | \"/v1/embeddings: cosine(text, image) = \(.)\""

# Weaviate's API.
jq -n --arg text "$TEXT" --rawfile image "$image_b64" '{texts: [$text], images: [$image]}' \
    | post /vectorize \
    | jq -r "[.textVectors[0], .imageVectors[0]] | $cosine | \"/vectorize: cosine(text, image) = \(.)\""
