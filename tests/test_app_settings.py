"""app/settings.py: HANDSPRING_* variables, defaults, validation with clear messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import MiB, Settings, SettingsError, available_cpus

pytestmark = pytest.mark.timeout(30)


def test_defaults():
    s = Settings.from_env({})
    assert s.weights_dir is None and s.feature == "clip_vit_b_32" and s.precision == "auto"
    assert s.threads == available_cpus() == s.preprocess_workers and s.threads >= 1
    assert s.batch_window_ms == 100.0 and s.max_batch == 32 and s.max_items == 256 and s.take_turns is True
    assert s.max_body_bytes == 64 * MiB and s.max_image_pixels == 64_000_000 and s.log_level == "INFO"


def test_every_variable_is_read():
    s = Settings.from_env({
        "HANDSPRING_WEIGHTS_DIR": "/models/clip", "HANDSPRING_FEATURE": "clip_vit_b_32_text",
        "HANDSPRING_PRECISION": "BF16", "HANDSPRING_THREADS": "3", "HANDSPRING_PREPROCESS_WORKERS": "5",
        "HANDSPRING_BATCH_WINDOW_MS": "2.5", "HANDSPRING_MAX_BATCH": "64", "HANDSPRING_MAX_BODY_BYTES": "16MiB",
        "HANDSPRING_MAX_ITEMS": "1_000", "HANDSPRING_MAX_IMAGE_PIXELS": "1000000", "HANDSPRING_LOG_LEVEL": "debug",
        "HANDSPRING_TAKE_TURNS": "off", "HANDSPRING_INFERENCE_WORKERS": "3",
    })
    assert s.weights_dir == Path("/models/clip") and s.feature == "clip_vit_b_32_text" and s.precision == "bf16"
    assert (s.threads, s.preprocess_workers, s.batch_window_ms, s.max_batch) == (3, 5, 2.5, 64)
    assert (s.max_body_bytes, s.max_items, s.max_image_pixels, s.log_level) == (16 * MiB, 1000, 1_000_000, "DEBUG")
    assert s.take_turns is False and s.inference_workers == 3


@pytest.mark.parametrize("threads, workers", [(1, 1), (2, 2), (16, 2)])
def test_two_forward_passes_side_by_side_wherever_there_are_two_threads(threads, workers):
    assert Settings.from_env({"HANDSPRING_THREADS": str(threads)}).inference_workers == workers
    assert Settings.from_env({"HANDSPRING_THREADS": str(threads), "HANDSPRING_INFERENCE_WORKERS": "0"}).inference_workers == workers


def test_inference_workers_need_a_thread_each():
    with pytest.raises(SettingsError, match="HANDSPRING_INFERENCE_WORKERS=3 is more than HANDSPRING_THREADS=2"):
        Settings.from_env({"HANDSPRING_THREADS": "2", "HANDSPRING_INFERENCE_WORKERS": "3"})
    with pytest.raises(SettingsError, match="HANDSPRING_INFERENCE_WORKERS=-1 must be an integer >= 0"):
        Settings.from_env({"HANDSPRING_INFERENCE_WORKERS": "-1"})


def test_take_turns_must_be_a_boolean():
    with pytest.raises(SettingsError, match="HANDSPRING_TAKE_TURNS='sometimes'"):
        Settings.from_env({"HANDSPRING_TAKE_TURNS": "sometimes"})


def test_empty_variables_count_as_unset():
    assert Settings.from_env({"HANDSPRING_MAX_BATCH": "", "HANDSPRING_FEATURE": "  "}) == Settings.from_env({})


@pytest.mark.parametrize("text, size", [("1024", 1024), ("64MiB", 64 * MiB), ("64mb", 64_000_000),
                                        ("512 KiB", 512 * 1024), ("1G", 10**9)])
def test_body_sizes(text, size):
    assert Settings.from_env({"HANDSPRING_MAX_BODY_BYTES": text}).max_body_bytes == size


def test_every_problem_is_reported_at_once():
    with pytest.raises(SettingsError) as info:
        Settings.from_env({
            "HANDSPRING_FEATURE": "clip_vit_g_99", "HANDSPRING_PRECISION": "fp8", "HANDSPRING_THREADS": "0",
            "HANDSPRING_MAX_BATCH": "lots", "HANDSPRING_BATCH_WINDOW_MS": "-1", "HANDSPRING_MAX_BODY_BYTES": "big",
            "HANDSPRING_LOG_LEVEL": "chatty",
        })
    message = str(info.value)
    for name in ("FEATURE", "PRECISION", "THREADS", "MAX_BATCH", "BATCH_WINDOW_MS", "MAX_BODY_BYTES", "LOG_LEVEL"):
        assert f"HANDSPRING_{name}" in message
    assert "clip_vit_b_32" in message  # lists the features that exist
    assert "'lots'" in message and "not an integer" in message


def test_settings_built_in_code_are_validated_too():
    with pytest.raises(SettingsError, match="MAX_ITEMS"):
        Settings(max_items=0)
    with pytest.raises(SettingsError, match="FEATURE"):
        Settings(feature="nope")


def test_public_is_json_ready():
    import json

    out = Settings(weights_dir=Path("/w")).public()
    assert out["weights_dir"] == "/w" and json.loads(json.dumps(out)) == out


def test_access_log_is_off_unless_asked_for(app_settings):
    import logging

    from fastapi.testclient import TestClient

    from app.main import create_app

    assert Settings.from_env({"HANDSPRING_ACCESS_LOG": "true"}).access_log is True
    from tests.test_app_contract import wait_ready

    for wanted in (False, True):
        with TestClient(create_app(app_settings(access_log=wanted))) as client:
            assert logging.getLogger("uvicorn.access").disabled is not wanted
            wait_ready(client)  # no model load left running in a thread when the process exits


def test_the_limits_are_read_and_default_sensibly():
    from app.settings import available_memory_bytes

    s = Settings.from_env({})
    assert (s.max_concurrent_requests, s.request_timeout_s, s.drain_timeout_s) == (256, 45.0, 25.0)
    assert s.max_videos_per_request == 16 and s.max_audio_seconds_per_request == 1800.0
    assert s.max_prepared_mb == max(64, available_memory_bytes() // 4 // 1_000_000)
    s = Settings.from_env({"HANDSPRING_MAX_CONCURRENT_REQUESTS": "8", "HANDSPRING_REQUEST_TIMEOUT_S": "2.5",
                           "HANDSPRING_DRAIN_TIMEOUT_S": "10", "HANDSPRING_MAX_PREPARED_MB": "512",
                           "HANDSPRING_MAX_VIDEOS_PER_REQUEST": "2", "HANDSPRING_MAX_AUDIO_SECONDS_PER_REQUEST": "60"})
    assert (s.max_concurrent_requests, s.request_timeout_s, s.drain_timeout_s, s.max_prepared_mb) == (8, 2.5, 10.0, 512)
    assert (s.max_videos_per_request, s.max_audio_seconds_per_request) == (2, 60.0)


@pytest.mark.parametrize("name, value", [("MAX_CONCURRENT_REQUESTS", "0"), ("REQUEST_TIMEOUT_S", "-1"),
                                         ("DRAIN_TIMEOUT_S", "0"), ("MAX_PREPARED_MB", "lots"),
                                         ("MAX_VIDEOS_PER_REQUEST", "0"), ("MAX_AUDIO_SECONDS_PER_REQUEST", "nan")])
def test_a_bad_limit_is_named(name, value):
    with pytest.raises(SettingsError, match=f"HANDSPRING_{name}"):
        Settings.from_env({f"HANDSPRING_{name}": value})


def test_backend_setting():
    assert Settings.from_env({}).backend == "torch"
    assert Settings.from_env({"HANDSPRING_BACKEND": "OpenVINO"}).backend == "openvino"
    with pytest.raises(SettingsError, match="HANDSPRING_BACKEND='onnx' must be one of torch, openvino"):
        Settings.from_env({"HANDSPRING_BACKEND": "onnx"})


def test_the_openvino_backend_runs_one_pass_at_a_time_by_default():
    # OpenVINO runs each pass on all its threads; two slots would only queue behind each other.
    assert Settings(threads=2, backend="openvino").inference_workers == 1
    assert Settings(threads=2, backend="torch").inference_workers == 2
