// Embed a text and an image with Java 17's java.net.http, through both APIs (OpenAI's and
// Weaviate's), and print the cosine of the two vectors from each. No dependencies: the vectors
// come back from /v1/embeddings as base64 float32s (encoding_format "base64"), which need no JSON
// parser, and /vectorize's arrays of numbers are read with a regular expression.
//
//   java Embed.java [URL] [IMAGE]    URL defaults to $HANDSPRING_URL, else http://localhost:8080

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

public class Embed {
    // HTTP/1.1 said outright: by default the client offers an upgrade to HTTP/2 ("Upgrade: h2c") on
    // every request, and uvicorn (with httptools) then drops the request's body (uvicorn issue 2722).
    static final HttpClient CLIENT = HttpClient.newBuilder()
            .version(HttpClient.Version.HTTP_1_1)
            .connectTimeout(Duration.ofSeconds(10))
            .build();

    public static void main(String[] args) throws IOException, InterruptedException {
        String env = System.getenv("HANDSPRING_URL");
        String url = args.length > 0 ? args[0] : env != null ? env : "http://localhost:8080";
        Path image = Path.of(args.length > 1 ? args[1] : "../red-circle.png");
        String imageBase64 = Base64.getEncoder().encodeToString(Files.readAllBytes(image));
        String text = "a red circle";  // no quotes or backslashes: it goes into the JSON as it is

        // OpenAI's API: the model's name from /v1/models, then both inputs in one request.
        String model = first(Pattern.compile("\"id\"\\s*:\\s*\"([^\"]+)\""), call(url, "/v1/models", null));
        String answer = call(url, "/v1/embeddings", """
                {"model": "%s", "encoding_format": "base64", "input": ["%s", {"image": "%s"}]}"""
                .formatted(model, text, imageBase64));
        List<float[]> vectors = new ArrayList<>();
        Matcher m = Pattern.compile("\"embedding\"\\s*:\\s*\"([^\"]+)\"").matcher(answer);
        while (m.find()) {
            ByteBuffer bytes = ByteBuffer.wrap(Base64.getDecoder().decode(m.group(1))).order(ByteOrder.LITTLE_ENDIAN);
            float[] vector = new float[bytes.remaining() / 4];
            bytes.asFloatBuffer().get(vector);
            vectors.add(vector);
        }
        System.out.printf("/v1/embeddings: cosine(text, image) = %.6f%n", cosine(vectors.get(0), vectors.get(1)));

        // Weaviate's API: {"texts": [...], "images": [...]} -> textVectors, imageVectors.
        answer = call(url, "/vectorize", """
                {"texts": ["%s"], "images": ["%s"]}""".formatted(text, imageBase64));
        float[] textVector = numbers(first(Pattern.compile("\"textVectors\"\\s*:\\s*\\[\\s*\\[([^\\]]*)\\]"), answer));
        float[] imageVector = numbers(first(Pattern.compile("\"imageVectors\"\\s*:\\s*\\[\\s*\\[([^\\]]*)\\]"), answer));
        System.out.printf("/vectorize: cosine(text, image) = %.6f%n", cosine(textVector, imageVector));
    }

    static String call(String url, String path, String json) throws IOException, InterruptedException {
        HttpRequest.Builder request = HttpRequest.newBuilder(URI.create(url + path)).timeout(Duration.ofSeconds(60));
        String key = System.getenv("HANDSPRING_API_KEY");
        if (key != null && !key.isEmpty()) {
            request.header("Authorization", "Bearer " + key);
        }
        if (json != null) {
            request.header("Content-Type", "application/json").POST(HttpRequest.BodyPublishers.ofString(json));
        }
        HttpResponse<String> response = CLIENT.send(request.build(), HttpResponse.BodyHandlers.ofString());
        if (response.statusCode() != 200) {
            throw new IOException(path + ": " + response.statusCode() + " " + response.body());
        }
        return response.body();
    }

    static String first(Pattern pattern, String text) {
        Matcher m = pattern.matcher(text);
        if (!m.find()) {
            throw new IllegalStateException("unexpected answer: " + text);
        }
        return m.group(1);
    }

    static float[] numbers(String commaSeparated) {
        String[] parts = commaSeparated.split(",");
        float[] out = new float[parts.length];
        for (int i = 0; i < parts.length; i++) {
            out[i] = Float.parseFloat(parts[i].trim());
        }
        return out;
    }

    static double cosine(float[] a, float[] b) {
        double dot = 0, aa = 0, bb = 0;
        for (int i = 0; i < a.length; i++) {
            dot += (double) a[i] * b[i];
            aa += (double) a[i] * a[i];
            bb += (double) b[i] * b[i];
        }
        return dot / Math.sqrt(aa * bb);
    }
}
