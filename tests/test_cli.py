"""The ``handspring`` command (handspring/cli.py): help that reads well, each subcommand handing
over to the module that owns it, and nothing heavy imported before it is needed."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib

import pytest

import handspring_models

from handspring.cli import main
from tests.conftest import REPO

VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def test_help_lists_the_commands_without_importing_torch():
    code = ("import sys; from handspring.cli import main; code = main(['--help']); "
            "assert 'torch' not in sys.modules and 'fastapi' not in sys.modules; sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for command in ("serve", "weights", "models"):
        assert f"\n  {command} " in done.stdout


def test_no_command_prints_the_usage_and_fails(capsys):
    assert main([]) == 2
    assert "usage: handspring <command>" in capsys.readouterr().err


def test_an_unknown_command_names_the_known_ones(capsys):
    assert main(["vectorize"]) == 2
    assert "serve, weights, embed, models" in capsys.readouterr().err


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"handspring {VERSION}"


def test_serve_help_is_the_services_own_under_the_commands_name(capsys):
    with pytest.raises(SystemExit) as e:
        main(["serve", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: handspring serve [-h] [--host HOST] [--port PORT]")
    assert "HANDSPRING_API_KEY" in out and "HANDSPRING_WEIGHTS_DIR" in out


def test_weights_help_lists_list_too(capsys):
    with pytest.raises(SystemExit):
        main(["weights", "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: handspring weights") and "list" in out and "download" in out


def test_weights_list_shows_a_folder_with_its_model_and_licence(tiny_weights, tmp_path, capsys):
    shutil.copytree(tiny_weights, tmp_path / "tiny")
    assert main(["weights", "list", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "tiny" in line)
    assert "clip_vit_b_32" in line and "complete" in line and "licence:" in line
    models = out.split("weights folders in")[0]
    assert all(spec.name in models for spec in handspring_models.list_models())


def test_weights_list_flags_an_incomplete_folder(tiny_weights, tmp_path, capsys):
    shutil.copytree(tiny_weights, tmp_path / "tiny")
    (tmp_path / "tiny" / "text.safetensors").unlink()
    assert main(["weights", "list", str(tmp_path)]) == 0
    assert "INCOMPLETE" in capsys.readouterr().out


def test_models_lists_every_feature(capsys):
    import handspring_models

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for feature in handspring_models.FEATURES:
        assert feature in out


def test_embed_is_the_bulk_embedding_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["embed", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: handspring embed") and "--out" in out
