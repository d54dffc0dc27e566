"""Repository-level checks: Dockerfiles lint clean, CI calls make test, README commands."""
from __future__ import annotations

import subprocess

from models.paths import REPO


def test_dockerfiles_pass_hadolint():
    hadolint = REPO / ".venv" / "bin" / "hadolint"
    files = sorted(str(p) for p in (REPO / "docker").glob("Dockerfile*"))
    assert len(files) == 2
    r = subprocess.run([str(hadolint), *files], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_ci_runs_make_test():
    text = (REPO / ".ci" / "run").read_text()
    assert "make test" in text


def test_readme_starts_with_the_two_commands():
    head = (REPO / "README.md").read_text().split("\n## ")[0]
    assert "make demo" in head and "make test" in head


def test_setup_is_a_no_op_when_cached():
    """A second setup finds the cached engine build and skips it."""
    r = subprocess.run(["bash", "engine/setup.sh"], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "is up to date; skipping the build" in r.stdout
    assert "make -j" not in r.stdout
