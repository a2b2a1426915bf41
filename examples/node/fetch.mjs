// Embed a text and an image with Node's own fetch, through both APIs (OpenAI's and Weaviate's),
// and print the cosine of the two vectors from each. No dependencies.
//
//   node fetch.mjs [URL] [IMAGE]    URL defaults to $HANDSPRING_URL, else http://localhost:8080
import { readFileSync } from "node:fs";

const url = process.argv[2] ?? process.env.HANDSPRING_URL ?? "http://localhost:8080";
const image = readFileSync(process.argv[3] ?? new URL("../red-circle.png", import.meta.url)).toString("base64");
const text = "a red circle";
const headers = { "Content-Type": "application/json" };
if (process.env.HANDSPRING_API_KEY) headers.Authorization = `Bearer ${process.env.HANDSPRING_API_KEY}`;

async function call(path, body) {
  const response = await fetch(url + path, body ? { method: "POST", headers, body: JSON.stringify(body) } : { headers });
  const answer = await response.json();
  if (!response.ok) throw new Error(`${path}: ${response.status} ${JSON.stringify(answer.error)}`);
  return answer;
}

const dot = (a, b) => a.reduce((sum, x, i) => sum + x * b[i], 0);
const cosine = (a, b) => dot(a, b) / Math.sqrt(dot(a, a) * dot(b, b));

// OpenAI's API: the model's name from /v1/models, then both inputs in one request.
const model = (await call("/v1/models")).data[0].id;
const embedded = await call("/v1/embeddings", { model, input: [text, { image }] });
const [a, b] = embedded.data.map((item) => item.embedding);
console.log(`/v1/embeddings: cosine(text, image) = ${cosine(a, b).toFixed(6)}`);

// Weaviate's API.
const vectors = await call("/vectorize", { texts: [text], images: [image] });
console.log(`/vectorize: cosine(text, image) = ${cosine(vectors.textVectors[0], vectors.imageVectors[0]).toFixed(6)}`);
