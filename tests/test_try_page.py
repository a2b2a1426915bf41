"""The try-it page (GET /) end to end, in a real headless Chromium: Debian's `chromium` package
driven by Playwright (`executable_path`; Playwright's own browser download cannot work here),
against a live ``uvicorn app.main:app`` serving a tiny random demo model, as
``python -m handspring_models.weights random`` writes one (tests/conftest.py's ``tiny_demo_weights``; HANDSPRING_TRY_PAGE_WEIGHTS=<folder> serves another, e.g.
the full-size one ``python -m handspring_models.weights random clip_vit_b_32`` writes, for the
README's picture).

The page's ranking must be the API's: the test embeds the same files through /vectorize itself
and compares order and scores. A screenshot is written to $HANDSPRING_TEST_ARTIFACTS (default
test-artifacts/, ignored by git). Without Chromium or Playwright the tests are skipped, unless
HANDSPRING_BROWSER_TESTS=require (CI), where that is a failure.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.conftest import REPO
from tests.test_app_server import free_port, request, start, stop

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 60_000  # generous for a shared 2-core machine; a wait, never a timing asserted
QUERY = "a yellow sun in a blue sky"


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (make install-dev)"
    if not Path(CHROMIUM).is_file():
        return f"no {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture(scope="module", autouse=True)
def _need_browser():
    missing = _browser_missing()
    if missing:
        if os.environ.get("HANDSPRING_BROWSER_TESTS") == "require":
            pytest.fail(f"HANDSPRING_BROWSER_TESTS=require but {missing}")
        pytest.skip(missing)


# ------------------------------------------------------------------ inputs


def png(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def generated_images() -> dict[str, bytes]:
    """Three pictures as unlike each other as possible, so their scores are far apart."""
    sun = Image.new("RGB", (320, 240), (40, 110, 210))
    ImageDraw.Draw(sun).ellipse((110, 50, 230, 170), fill=(250, 205, 40))
    noise = Image.fromarray(np.random.default_rng(7).integers(0, 256, (240, 320, 3), dtype=np.uint8))
    stripes = Image.new("RGB", (320, 240), (20, 130, 60))
    for x in range(0, 320, 40):
        ImageDraw.Draw(stripes).rectangle((x, 0, x + 18, 240), fill=(240, 240, 235))
    return {"sunny-sky.png": png(sun), "static-noise.png": png(noise), "green-stripes.jpg": png(stripes, "JPEG")}


BROKEN = ("holiday.jpg", b"\xff\xd8\xff\xe0 this is not really a JPEG")


def as_upload(name: str, data: bytes) -> dict:
    kind = "image/jpeg" if name.endswith(".jpg") else "image/png"
    return {"name": name, "mimeType": kind, "buffer": data}


# ------------------------------------------------------------------ the live service


@pytest.fixture(scope="module")
def server(tiny_demo_weights, tmp_path_factory) -> str:
    """``uvicorn app.main:app`` on the demo weights; yields its base URL."""
    port, log = free_port(), tmp_path_factory.mktemp("try-page-server") / "server.log"
    weights = os.environ.get("HANDSPRING_TRY_PAGE_WEIGHTS") or tiny_demo_weights
    proc = start({"HANDSPRING_WEIGHTS_DIR": str(weights), "HANDSPRING_PRECISION": "fp32"}, log, port)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if request(port, "GET", "/.well-known/ready")[0] == 204:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def api(base: str, body: dict) -> tuple[int, dict]:
    port = int(base.rsplit(":", 1)[1])
    status, answer = request(port, "POST", "/vectorize", json.dumps(body).encode(), timeout=120)
    return status, json.loads(answer)


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


# ------------------------------------------------------------------ the browser


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Debian's Chromium with a fresh profile, nothing shared with any other run."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, args=CHROMIUM_ARGS,
            headless=True, viewport={"width": 1100, "height": 900}, device_scale_factor=1)
        try:
            yield context
        finally:
            context.close()


@dataclass
class Tab:
    page: object
    base: str
    errors: list = field(default_factory=list)  # uncaught exceptions in the page's script
    requests: list = field(default_factory=list)  # every URL the page asked for


@pytest.fixture
def blank_tab(browser, server) -> Tab:
    """A new tab, the page not loaded yet."""
    page = browser.new_page()
    page.bring_to_front()  # the active tab, as the one a user types into
    page.set_default_timeout(WAIT_MS)
    t = Tab(page, server)
    page.on("pageerror", lambda e: t.errors.append(str(e)))
    page.on("request", lambda r: t.requests.append(r.url))
    yield t
    page.close()
    # every test: the page asked nothing of any other server (no CDN, font, analytics...)
    foreign = [u for u in t.requests if not u.startswith((server + "/", "blob:", "data:"))]
    assert foreign == [], foreign


@pytest.fixture
def tab(blank_tab) -> Tab:
    """The page loaded, /meta read."""
    blank_tab.page.goto(blank_tab.base + "/")
    blank_tab.page.locator("body[data-ready=true]").wait_for()
    return blank_tab


def add_files(t: Tab, files: dict[str, bytes]) -> None:
    from playwright.sync_api import expect

    before = t.page.locator(".item").count()
    t.page.set_input_files("#file-input", [as_upload(n, d) for n, d in files.items()])
    settled = t.page.locator(".item.done, .item.error")
    expect(settled).to_have_count(before + len(files))


def results_for(t: Tab, query: str):
    """The result rows once the page has ranked by ``query``."""
    rows = t.page.locator(f'#results[data-query="{query}"] .result')
    rows.first.wait_for()
    return rows


def search(t: Tab, query: str, keep: bool = True):
    t.page.fill("#query", query)
    if keep:
        t.page.press("#query", "Enter")
    return results_for(t, query)


# ------------------------------------------------------------------ tests


def test_the_ranking_is_the_apis_cosine_ranking(tab):
    images = generated_images()
    names = list(images)
    status, answer = api(tab.base, {"texts": [QUERY], "images": [base64.b64encode(d).decode() for d in images.values()]})
    assert status == 200, answer
    scores = {n: cosine(answer["textVectors"][0], v) for n, v in zip(names, answer["imageVectors"])}
    expected = sorted(names, key=scores.get, reverse=True)
    gaps = np.diff(sorted(scores.values()))
    assert gaps.min() > 1e-3, f"scores too close to order reliably: {scores}"

    add_files(tab, images)
    rows = search(tab, QUERY)
    from playwright.sync_api import expect

    expect(rows).to_have_count(3)
    shown = [(r.get_attribute("data-name"), float(r.get_attribute("data-score")), r.locator(".score").inner_text())
             for r in rows.all()]
    assert [name for name, _, _ in shown] == expected
    for name, score, text in shown:
        assert score == pytest.approx(scores[name], abs=1e-4), name
        assert abs(float(text) - scores[name]) <= 0.00005 + 1e-4, (name, text, scores[name])
    assert tab.errors == []


def test_a_broken_file_shows_the_apis_error_beside_it(tab):
    name, data = BROKEN
    status, answer = api(tab.base, {"images": [base64.b64encode(data).decode()]})
    assert status == 422
    message = answer["error"].removeprefix("images[0]: ")
    assert message != answer["error"]  # the API names the item; the page puts it beside the item instead

    add_files(tab, {"sunny-sky.png": generated_images()["sunny-sky.png"], name: data})
    broken = tab.page.locator(f'.item[data-name="{name}"]')
    assert broken.get_attribute("data-status") == "error"
    error = broken.locator(".item-error").inner_text()
    assert message in error and "422" in error
    assert tab.page.locator('.item[data-name="sunny-sky.png"] .item-error').count() == 0
    # and it is left out of the ranking, which says why
    rows = search(tab, QUERY)
    assert [r.get_attribute("data-name") for r in rows.all()] == ["sunny-sky.png"]
    assert "1 not ranked" in tab.page.locator("#results-note").inner_text()


def test_the_demo_banner_is_shown_for_random_weights(tab):
    from playwright.sync_api import expect

    meta = json.loads(request(int(tab.base.rsplit(":", 1)[1]), "GET", "/meta", timeout=10)[1])
    assert meta["weights"]["random"] is True
    banner = tab.page.locator("#demo-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Random demo weights")
    expect(banner).to_contain_text(meta["weights"]["source"])
    facts = tab.page.locator("#model").inner_text()
    for shown in ("clip_vit_b_32", "text, image", str(meta["dim"]), "fp32", "unit vectors"):
        assert shown in facts


def test_while_the_model_loads_the_page_says_so_and_waits(blank_tab):
    from playwright.sync_api import expect

    page, loaded = blank_tab.page, []

    def meta(route):  # /meta answers as a loading server does until the test says the model is loaded
        if loaded:
            route.continue_()
        else:
            route.fulfill(status=503, content_type="application/json", headers={"Retry-After": "1"},
                          body=json.dumps({"error": "model is loading"}))

    page.route("**/meta", meta)
    page.goto(blank_tab.base + "/")
    expect(page.locator("#status")).to_contain_text("model is loading")
    assert page.locator("#query").is_disabled() and page.locator("#file-input").is_disabled()
    loaded.append(True)
    page.locator("body[data-ready=true]").wait_for()
    expect(page.locator("#status")).to_be_hidden()
    assert page.locator("#query").is_enabled()


def test_meta_fields_missing_or_unknown_do_not_break_the_page(blank_tab):
    """/meta may gain fields (aliases...) or lose some; a text-only feature has no files to add."""
    from playwright.sync_api import expect

    page = blank_tab.page
    meta = {"model": "some_future_model", "feature": "some_future_model_text", "aliases": ["sfm-text"],
            "modalities": ["text"], "normalize": False, "precision": "bf16", "weights": {"license": "Apache-2.0"},
            "something_new": {"nested": [1, 2, 3]}}
    page.route("**/meta", lambda route: route.fulfill(status=200, content_type="application/json",
                                                      body=json.dumps(meta)))
    page.goto(blank_tab.base + "/")
    page.locator("body[data-ready=true]").wait_for()
    facts = page.locator("#model")
    for shown in ("some_future_model", "sfm-text", "bf16", "Apache-2.0", "not normalized"):
        expect(facts).to_contain_text(shown)
    expect(page.locator("#demo-banner")).to_be_hidden()
    assert page.locator("#file-input").is_disabled() and page.locator("#query").is_enabled()
    expect(page.locator("#accept-hint")).to_contain_text("texts only")
    assert blank_tab.errors == []


def test_the_file_grid_shows_the_apis_cosines(tab):
    images = generated_images()
    status, answer = api(tab.base, {"images": [base64.b64encode(d).decode() for d in images.values()]})
    assert status == 200
    vectors = answer["imageVectors"]
    add_files(tab, images)
    tab.page.click("#grid-files")
    cells = tab.page.locator("#grid tbody tr")
    from playwright.sync_api import expect

    expect(cells).to_have_count(3)
    for i, row in enumerate(cells.all()):
        values = [float(c.inner_text()) for c in row.locator("td").all()]
        assert values == pytest.approx([cosine(vectors[i], v) for v in vectors], abs=0.005 + 1e-4)
    assert tab.page.locator("#grid-files").get_attribute("aria-pressed") == "true"


def test_the_text_grid_shows_the_apis_cosines(tab):
    queries = ["a photo of a dog", "a yellow sun in a blue sky", "stripes on grass"]
    status, answer = api(tab.base, {"texts": queries})
    assert status == 200
    vectors = answer["textVectors"]
    for query in queries:  # kept, with no files to rank
        tab.page.fill("#query", query)
        tab.page.press("#query", "Enter")
        tab.page.locator("#queries .chip-main", has_text=query).wait_for()
    tab.page.click("#grid-text")
    rows = tab.page.locator("#grid tbody tr")
    from playwright.sync_api import expect

    expect(rows).to_have_count(3)
    assert [r.locator("th").inner_text() for r in rows.all()] == queries
    for i, row in enumerate(rows.all()):
        values = [float(c.inner_text()) for c in row.locator("td").all()]
        assert values == pytest.approx([cosine(vectors[i], v) for v in vectors], abs=0.005 + 1e-4)


def test_files_dropped_on_the_zone_are_embedded(tab):
    data = generated_images()["sunny-sky.png"]
    transfer = tab.page.evaluate_handle(
        """([name, b64]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: "image/png" }));
            return transfer;
        }""", ["dropped.png", base64.b64encode(data).decode()])
    tab.page.dispatch_event("#drop", "dragenter", {"dataTransfer": transfer})
    assert "over" in tab.page.get_attribute("#drop", "class")  # the zone shows it takes the drop
    tab.page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    tab.page.locator('.item.done[data-name="dropped.png"]').wait_for()
    assert "over" not in tab.page.get_attribute("#drop", "class")


def test_the_page_can_be_worked_by_keyboard_alone(tab):
    page = tab.page
    # Catch file choosers from now on: Playwright turns the interception on without waiting for it,
    # so turned on only by expect_file_chooser it may come after the key press under load.
    page.on("filechooser", lambda chooser: None)
    for _ in range(20):  # Tab to the file picker
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.id") == "file-input":
            break
    else:
        pytest.fail("the file picker cannot be reached with Tab")
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Enter")
    chooser.value.set_files([as_upload("sunny-sky.png", generated_images()["sunny-sky.png"])])
    page.locator(".item.done").wait_for()
    for _ in range(20):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.id") == "query":
            break
    else:
        pytest.fail("the query box cannot be reached with Tab")
    page.keyboard.type("sunshine")
    page.keyboard.press("Enter")
    assert results_for(tab, "sunshine").count() == 1


def test_every_control_has_a_name(tab):
    add_files(tab, dict([BROKEN, ("sunny-sky.png", generated_images()["sunny-sky.png"])]))
    search(tab, QUERY)
    tab.page.click("#grid-files")
    unnamed = tab.page.evaluate("""() => [...document.querySelectorAll('button, input, select, [role=button]')]
        .filter((e) => !e.hidden && !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                       && !e.textContent.trim())
        .map((e) => e.outerHTML)""")
    assert unnamed == []


def test_a_narrow_window_needs_no_sideways_scrolling(tab):
    tab.page.set_viewport_size({"width": 360, "height": 740})
    add_files(tab, generated_images())
    search(tab, QUERY)
    width = tab.page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 360


def test_the_page_reads_only_its_own_server(tab):
    """The fixture checks every test's requests; here, that it saw them (the page's own and /meta)."""
    assert tab.requests[0] == tab.base + "/" and tab.base + "/meta" in tab.requests
    assert tab.base + "/ui/app.js" in tab.requests


def test_a_screenshot_of_the_page(tab):
    """The picture in the README (docs/try-page.png is a copy of it); look at it."""
    add_files(tab, generated_images())
    add_files(tab, dict([BROKEN]))
    search(tab, "a photo of a dog")
    search(tab, "stripes on grass")
    search(tab, QUERY)
    tab.page.click("#grid-files")
    tab.page.locator("#grid table").wait_for()
    out = Path(os.environ.get("HANDSPRING_TEST_ARTIFACTS", REPO / "test-artifacts")) / "try-page.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    tab.page.screenshot(path=str(out), full_page=True)
    with Image.open(out) as shot:
        assert shot.width == 1100 and shot.height > 900
    assert tab.errors == []
    print(f"screenshot: {out}")


def test_behind_an_api_key_the_page_asks_for_it_and_sends_it(blank_tab):
    """HANDSPRING_API_KEY, played by page.route in front of the live server: /meta and /vectorize
    answer 401 as app/auth.py does until the request carries the key the user typed."""
    from playwright.sync_api import expect

    page, key, sent = blank_tab.page, "s3cret-key", []

    def guard(route):
        authorization = route.request.headers.get("authorization")
        sent.append((route.request.url.rsplit("/", 1)[1], authorization))
        if authorization == f"Bearer {key}":
            route.continue_()
        else:
            route.fulfill(status=401, content_type="application/json", headers={"WWW-Authenticate": "Bearer"},
                          body=json.dumps({"error": "invalid API key" if authorization else "missing API key"}))

    page.route("**/meta", guard)
    page.route("**/vectorize", guard)
    page.goto(blank_tab.base + "/")
    expect(page.locator("#key-form")).to_be_visible()
    expect(page.locator("#key-error")).to_contain_text("missing API key")
    page.fill("#api-key", key)
    page.press("#api-key", "Enter")
    page.locator("body[data-ready=true]").wait_for()
    expect(page.locator("#key-form")).to_be_hidden()
    add_files(blank_tab, {"sunny-sky.png": generated_images()["sunny-sky.png"]})
    assert page.locator(".item.done").count() == 1
    assert sent[0] == ("meta", None) and ("meta", f"Bearer {key}") in sent
    assert ("vectorize", f"Bearer {key}") in sent and ("vectorize", None) not in sent
