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
