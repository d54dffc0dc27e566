"""Repository-level checks: Dockerfiles and shell scripts lint clean, CI calls make test, README commands."""
from __future__ import annotations

import subprocess
from pathlib import Path

from models.paths import REPO


def test_dockerfile_passes_hadolint():
    hadolint = REPO / ".venv" / "bin" / "hadolint"
    files = sorted(str(p) for p in (REPO / "docker").glob("Dockerfile*"))
    assert files == [str(REPO / "docker" / "Dockerfile")]
    r = subprocess.run([str(hadolint), *files], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_docker_layers_keep_caffe_apart_from_the_code():
    """Caffe's build layer sees only engine/ and requirements.txt (numpy's headers); the torch
    and test-tool pins and the sources come after it, so changing them does not rebuild Caffe."""
    text = (REPO / "docker" / "Dockerfile").read_text()
    before, after = text.split("AS image\n")
    copied = [w for line in before.splitlines() if line.startswith("COPY ") for w in line.split()[1:-1]]
    assert sorted(copied) == ["engine/", "engine/", "engine/setup.sh", "requirements.txt"]
    later = [w for line in after.splitlines() if line.startswith("COPY ") for w in line.split()[1:-1]]
    assert later == ["requirements-torch.txt", "requirements-dev.txt", "."]


def test_gpu_image_keeps_the_default_cuda_arch():
    """The GPU image's run-time V2V_CUDA_ARCH default is engine/cuda_toolkit.py's DEFAULT_ARCH
    (else setup.sh in the container computes another build key and rebuilds)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("cuda_toolkit", REPO / "engine" / "cuda_toolkit.py")
    toolkit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(toolkit)
    text = (REPO / "docker" / "Dockerfile").read_text()
    assert f'ENV V2V_CUDA_ARCH="${{V2V_CUDA_ARCH:-{toolkit.DEFAULT_ARCH}}}"' in text


def test_dockerignore_keeps_host_builds_out_of_the_images():
    ignored = (REPO / ".dockerignore").read_text().split()
    for path in (".venv", "data", "runs", ".git"):
        assert path in ignored, path


def test_shell_scripts_pass_shellcheck():
    folders = ("engine", "tests", "docker", "cluster")
    files = sorted(str(p) for p in [*(p for d in folders for p in REPO.glob(f"{d}/*.sh")), REPO / ".ci" / "run"])
    assert {Path(f).parent.name for f in files} >= set(folders)
    r = subprocess.run([str(REPO / ".venv" / "bin" / "shellcheck"), *files], capture_output=True, text=True)
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


def test_lint_clean():
    """ruff with the rules in pyproject.toml, and the import-direction contract."""
    r = subprocess.run(["bash", "tests/lint.sh"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_import_contract_catches_an_upward_import(tmp_path):
    """The contract is not vacuous: models importing tools breaks it."""
    for pkg in ("models", "tools", "data_prep", "torch_runtime"):
        dst = tmp_path / pkg
        dst.mkdir()
        for f in (REPO / pkg).glob("*.py"):
            (dst / f.name).write_text(f.read_text())
    (tmp_path / "models" / "upward.py").write_text("import tools.train  # noqa: F401\n")
    (tmp_path / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    r = subprocess.run([str(REPO / ".venv" / "bin" / "lint-imports"), "--no-cache"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300,
                       env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)})
    assert r.returncode != 0 and "models.upward" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]


CAFFE_FREE = ["models.generate", "models.v2v", "models.paths", "models.metrics", "data_prep.clips",
              "data_prep.db", "data_prep.video", "data_prep.flo"]


def test_caffe_free_modules_import_without_pycaffe():
    """The generator, ClipSource and the record readers work where no engine is built."""
    code = ("import sys; sys.modules['caffe'] = None\n"
            + "".join(f"import {m}\n" for m in CAFFE_FREE)
            + "assert 'caffe.proto' not in sys.modules\n")
    r = subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-c", code], cwd="/", capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
