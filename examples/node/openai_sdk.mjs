// Embed a text and an image with the official OpenAI npm package, and print their cosine.
//
//   npm install            (in this folder)
//   node openai_sdk.mjs [URL] [IMAGE]    URL defaults to $HANDSPRING_URL, else http://localhost:8080
import { readFileSync } from "node:fs";
import OpenAI from "openai";

const url = process.argv[2] ?? process.env.HANDSPRING_URL ?? "http://localhost:8080";
const image = process.argv[3] ?? new URL("../red-circle.png", import.meta.url);

// The SDK insists on a key: any will do, unless the server was started with HANDSPRING_API_KEY.
const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: process.env.HANDSPRING_API_KEY ?? "none" });
const model = (await client.models.list()).data[0].id;

// A text as a string, an image as {image: base64 or a data: URL}; one vector each, in order.
const response = await client.embeddings.create({
  model,
  input: ["a red circle", { image: readFileSync(image).toString("base64") }],
});
const [text, picture] = response.data.map((item) => item.embedding);

const dot = (a, b) => a.reduce((sum, x, i) => sum + x * b[i], 0);
const cosine = dot(text, picture) / Math.sqrt(dot(text, text) * dot(picture, picture));
console.log(`${model}, ${text.length} dimensions, ${response.usage.prompt_tokens} tokens`);
console.log(`/v1/embeddings (openai npm): cosine(text, image) = ${cosine.toFixed(6)}`);
