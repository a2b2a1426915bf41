import subprocess
import sys

from tests.conftest import REPO

CHECK = "from app.memory import limit_malloc_arenas; print(limit_malloc_arenas())"


def run(env):
    return subprocess.run([sys.executable, "-c", CHECK], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60).stdout.strip()


def test_arenas_are_capped_on_glibc():
    assert run({"PATH": "/usr/bin:/bin"}) == "True"


def test_an_explicit_malloc_arena_max_is_left_alone():
    assert run({"PATH": "/usr/bin:/bin", "MALLOC_ARENA_MAX": "4"}) == "False"
