"""GPU requests that cannot be met are clear errors before Caffe sees them (models/gpu.py,
models/validate.py): a fake NVIDIA driver stands in for each case, and the real wrapper is
run on this machine, whatever it has."""
from __future__ import annotations

import ctypes
import importlib.util
import subprocess

import pytest

from models import engine, gpu, validate
from models.paths import PROTOTXT, REPO

CAFFE = REPO / ".venv" / "bin" / "caffe"
NO_DEVICE = 100  # CUDA_ERROR_NO_DEVICE


class FakeDriver:
    """The few libcuda entry points models.gpu calls."""

    def __init__(self, version=13000, init_rc=0, count=1):
        self.version, self.init_rc, self.count = version, init_rc, count

    def cuDriverGetVersion(self, ref):
        ref._obj.value = self.version
        return 0

    def cuInit(self, flags):
        return self.init_rc

    def cuDeviceGetCount(self, ref):
        ref._obj.value = self.count
        return 0

    def cuGetErrorName(self, rc, ref):
        ref._obj.value = b"CUDA_ERROR_NO_DEVICE"
        return 0


@pytest.fixture
def driver(monkeypatch):
    """driver(None) -> no libcuda; driver(FakeDriver(...)) -> that driver."""
    def _use(fake):
        def cdll(name):
            if fake is None:
                raise OSError(f"{name}: cannot open shared object file")
            return fake
        monkeypatch.setattr(ctypes, "CDLL", cdll)
        gpu.probe.cache_clear()
    yield _use
    gpu.probe.cache_clear()


def test_no_driver(driver):
    driver(None)
    st = gpu.probe()
    assert not st.usable and "libcuda.so.1 not found" in st.reason
    with pytest.raises(gpu.GpuUnavailable, match="-gpu 0: no usable GPU here: no NVIDIA driver"):
        gpu.check_request([0], "-gpu 0")


def test_driver_without_devices(driver, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    driver(FakeDriver(init_rc=NO_DEVICE, count=0))
    assert "CUDA_ERROR_NO_DEVICE" in gpu.probe().reason
    assert "CUDA_VISIBLE_DEVICES=''" in gpu.probe().reason


def test_driver_too_old(driver):
    driver(FakeDriver(version=12080, count=2))
    st = gpu.probe()
    assert st.count == 2 and not st.usable
    assert "supports CUDA 12.8" in st.reason and f">= {gpu.ENGINE_MIN_DRIVER}" in st.reason


def test_ids_checked_against_visible_gpus(driver):
    driver(FakeDriver(count=2))
    assert gpu.check_request(None, "-gpu all") == [0, 1]
    assert gpu.check_request([1], "-gpu 1") == [1]
    with pytest.raises(gpu.GpuUnavailable, match="GPU 3 does not exist; 2 GPU"):
        gpu.check_request([0, 3], "-gpu 0,3")
    for bad in ("x", "-1", ""):
        with pytest.raises(gpu.GpuUnavailable, match="expected GPU ids"):
            gpu.parse_ids(bad)


def test_multi_gpu_train_refused_for_python_data_layers(driver, monkeypatch):
    driver(FakeDriver(count=2))
    monkeypatch.setattr(engine, "cuda_build", lambda: True)
    solver = str(PROTOTXT / "seg_solver.prototxt")
    with pytest.raises(validate.ValidationError, match="multi-GPU training cannot run Python layers"):
        validate.check_gpu_request("train", {"solver": solver, "gpu": "all"})
    validate.check_gpu_request("train", {"solver": solver, "gpu": "1"})  # one GPU: fine


def test_solver_mode_gpu_is_a_gpu_request(tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "cuda_build", lambda: False)
    s = tmp_path / "s.prototxt"
    s.write_text((PROTOTXT / "seg_solver.prototxt").read_text() + "\nsolver_mode: GPU\n")
    with pytest.raises(validate.ValidationError, match=f"solver_mode: GPU in {s}: this engine is the CPU-only"):
        validate.check_gpu_request("train", {"solver": str(s)})


def test_engine_version_tied_to_the_toolkit():
    spec = importlib.util.spec_from_file_location("cuda_toolkit", REPO / "engine" / "cuda_toolkit.py")
    tk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tk)
    assert tk.CUDA_VERSION == "%d.%d" % gpu.ENGINE_CUDA
    assert tk.MIN_DRIVER == gpu.ENGINE_MIN_DRIVER
    assert all(w.split("==")[1].startswith(tk.CUDA_VERSION) for w in tk.WHEELS if "cuda-" in w)


def _caffe(*args):
    return subprocess.run([str(CAFFE), *args], capture_output=True, text=True, timeout=300, cwd=REPO)


def test_wrapper_gpu_request_here():
    """On this machine, whatever it has: a GPU request either runs or is one clear line."""
    r = _caffe("time", "-model", "prototxt/seg_v2v_deploy.prototxt", "-iterations", "1", "-gpu", "0")
    reason = engine.gpu_unavailable_reason()
    if reason:
        assert r.returncode == 2, r.stderr[-2000:]
        assert r.stderr.startswith("error: -gpu 0: ") and reason in r.stderr
        assert "Check failed" not in r.stderr and "core dumped" not in r.stderr
    else:
        assert r.returncode == 0, r.stderr[-2000:]


def test_device_query_needs_an_id():
    r = _caffe("device_query")
    assert r.returncode == 2 and "needs -gpu ID" in r.stderr


def test_train_device_for_caffe(driver, monkeypatch):
    from tools import train
    assert train.caffe_gpu("cpu") is None
    assert train.caffe_gpu("cuda") == 0 and train.caffe_gpu("cuda:3") == 3
    for bad in ("gpu", "cuda:x", "cuda:-1"):
        with pytest.raises(ValueError, match="expected cpu, cuda or cuda:N"):
            train.caffe_gpu(bad)
    monkeypatch.setattr(train, "gpu_unavailable_reason", lambda: "")
    assert train.caffe_gpu(None) == 0  # a usable GPU is the default
    monkeypatch.setattr(train, "gpu_unavailable_reason", lambda: "no GPU")
    assert train.caffe_gpu(None) is None
