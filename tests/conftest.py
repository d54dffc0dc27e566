"""Shared fixtures: the real engine (pycaffe through models.engine) and net helpers."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("GLOG_minloglevel", "2")


@pytest.fixture(scope="session")
def caffe():
    from models.engine import caffe as _caffe
    return _caffe()


@pytest.fixture
def make_net(tmp_path, caffe):
    """make_net(prototxt_text, phase="TEST", weights=None) -> caffe.Net from a temp file."""
    counter = [0]

    def _make(text, phase="TEST", weights=None):
        counter[0] += 1
        p = tmp_path / f"net{counter[0]}.prototxt"
        p.write_text(text)
        ph = caffe.TRAIN if phase == "TRAIN" else caffe.TEST
        if weights:
            return caffe.Net(str(p), str(weights), ph)
        return caffe.Net(str(p), ph)
    return _make


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# ---------------------------------------------------------------- GPU tests
# @pytest.mark.gpu: needs Caffe on a GPU (the CUDA engine build and a usable GPU);
# gpu(torch=True): also PyTorch with CUDA; gpu(count=2): at least two GPUs.
# Where they cannot run they are deselected and the summary says so in one line; with
# --require-gpu (make test-gpu) a machine where none can run fails instead.

def pytest_addoption(parser):
    parser.addoption("--require-gpu", action="store_true",
                     help="fail when the GPU tests cannot run here (make test-gpu)")


def _gpu_reasons():
    """Lazily computed: why Caffe / torch cannot use a GPU, and how many GPUs there are."""
    from models import gpu
    from models.engine import gpu_unavailable_reason
    caffe_reason = gpu_unavailable_reason()
    return caffe_reason, gpu.torch_cuda_reason(), gpu.probe().count


def _item_reason(item, reasons) -> str:
    caffe_reason, torch_reason, count = reasons
    mark = item.get_closest_marker("gpu")
    if caffe_reason:
        return caffe_reason
    if mark.kwargs.get("torch") and torch_reason:
        return torch_reason
    need = mark.kwargs.get("count", 1)
    return f"needs {need} GPUs, {count} visible" if count < need else ""


def pytest_collection_modifyitems(config, items):
    gpu_items = [i for i in items if i.get_closest_marker("gpu")]
    if not gpu_items:
        return
    reasons = _gpu_reasons()
    skipped = {}
    for item in gpu_items:
        why = _item_reason(item, reasons)
        if why:
            skipped.setdefault(why, []).append(item)
    if config.getoption("--require-gpu") and len(sum(skipped.values(), [])) == len(gpu_items):
        pytest.exit(f"--require-gpu: no GPU test can run here: {'; '.join(skipped)}", returncode=1)
    if skipped:
        drop = {id(i) for group in skipped.values() for i in group}
        config.hook.pytest_deselected(items=[i for i in items if id(i) in drop])
        items[:] = [i for i in items if id(i) not in drop]
        config._v2v_gpu_not_run = {why: len(group) for why, group in skipped.items()}


def pytest_terminal_summary(terminalreporter, config):
    for why, n in getattr(config, "_v2v_gpu_not_run", {}).items():
        terminalreporter.write_line(f"GPU tests not run: {n}, because {why} "
                                    "(make test-gpu runs them and fails where none can)",
                                    yellow=True)
