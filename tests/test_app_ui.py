"""The try-it page's routes (app/ui.py), in-process: served on / with its assets, self-contained,
off with HANDSPRING_UI=false, and never in the way of Weaviate's routes. The page itself is tested in
a real browser by tests/test_try_page.py."""

from __future__ import annotations

import re
import threading

import pytest
from fastapi.testclient import TestClient

import handspring_models
from app.main import create_app
from app.settings import Settings
from app.ui import ASSETS, STATIC
from tests.test_app_contract import wait_ready

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def client(app_settings):
    with TestClient(create_app(app_settings()), raise_server_exceptions=False) as c:
        wait_ready(c)
        yield c


def test_the_page_is_served_on_the_root(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    assert "<title>Handspring" in r.text and 'src="/ui/app.js"' in r.text


def test_every_file_the_page_loads_is_served(client):
    page = client.get("/").text
    wanted = set(re.findall(r'(?:src|href)="(/ui/[^"]+)"', page))
    assert wanted == {f"/ui/{name}" for name in ASSETS}
    for path in wanted:
        r = client.get(path)
        assert r.status_code == 200 and r.content == (STATIC / path.removeprefix("/ui/")).read_bytes(), path


def test_the_page_refers_to_nothing_outside_the_service():
    """No CDN, no web font, no absolute URL: it must work offline and inside the image."""
    for path in [STATIC / "index.html", *(STATIC / name for name in ASSETS)]:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.IGNORECASE) or path.suffix == ".svg", path
        assert "@import" not in text and "url(" not in text, path


def test_the_page_may_only_talk_to_its_own_server(client):
    policy = client.get("/").headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy and "script-src 'self'" in policy


def test_only_the_listed_assets_are_served(client):
    for path in ("/ui/index.html", "/ui/..%2Fui.py", "/ui/", "/ui/app.js/x", "/static/app.js"):
        r = client.get(path)
        assert r.status_code == 404 and "error" in r.json(), path


def test_the_page_is_served_while_the_model_loads(app_settings):
    """It shows the load in progress (it polls /meta), rather than a browser error page."""
    gate = threading.Event()

    def slow_loader(settings):
        assert gate.wait(60)
        return handspring_models.load(settings.feature, settings.weights_dir, precision=settings.precision)

    with TestClient(create_app(app_settings(), loader=slow_loader), raise_server_exceptions=False) as c:
        try:
            assert c.get("/meta").status_code == 503
            assert c.get("/").status_code == 200 and c.get("/ui/app.js").status_code == 200
        finally:
            gate.set()
        wait_ready(c)


def test_ui_false_turns_the_page_off_and_leaves_the_api(app_settings):
    with TestClient(create_app(app_settings(ui=False)), raise_server_exceptions=False) as c:
        wait_ready(c)
        for path in ("/", "/ui/app.js", "/ui/app.css"):
            r = c.get(path)
            assert r.status_code == 404 and r.json() == {"error": f"no such route: GET {path}"}, path
        assert c.get("/meta").status_code == 200
        assert c.post("/vectorize", content=b'{"texts": ["a"]}').status_code == 200


@pytest.mark.parametrize("value, on", [("false", False), ("0", False), ("off", False), ("true", True), ("", True)])
def test_ui_is_read_from_the_environment(value, on):
    assert Settings.from_env({"HANDSPRING_UI": value}).ui is on


def test_a_bad_ui_value_is_named():
    with pytest.raises(ValueError, match="HANDSPRING_UI='maybe'"):
        Settings.from_env({"HANDSPRING_UI": "maybe"})


def test_meta_says_when_the_weights_are_not_random(client):
    assert client.get("/meta").json()["weights"]["random"] is False


def test_meta_says_when_the_weights_are_a_random_demo(app_settings, tiny_demo_weights):
    """What the page's banner reads: weights written by `python -m handspring_models.weights random`."""
    with TestClient(create_app(app_settings(weights_dir=tiny_demo_weights)), raise_server_exceptions=False) as c:
        wait_ready(c)
        assert c.get("/meta").json()["weights"]["random"] is True


def test_the_page_is_open_behind_an_api_key_and_the_api_is_not(app_settings):
    """The page holds no secret; it asks the user for the key the API wants."""
    with TestClient(create_app(app_settings(api_keys=("s3cret",))), raise_server_exceptions=False) as c:
        wait_ready(c)
        assert c.get("/").status_code == 200 and c.get("/ui/app.js").status_code == 200
        assert c.get("/meta").status_code == 401
        assert c.get("/meta", headers={"Authorization": "Bearer s3cret"}).status_code == 200
