"""The synthetic scenes' truth is exact: frame t moved by its flow gives frame t+1."""
import numpy as np

from data_prep.synthetic import make_scene


def test_flow_truth_moves_frame_t_onto_frame_t1():
    s = make_scene(np.random.default_rng(3), frames=9, height=48, width=64, classes=4)
    T, H, W, _ = s.frames.shape
    assert s.flow.shape == (T - 1, H, W, 2) and s.labels.max() < 4
    for t in range(T - 1):
        u, v = s.flow[t, ..., 0].astype(int), s.flow[t, ..., 1].astype(int)
        yy, xx = np.mgrid[0:H, 0:W]
        ty, tx = yy + v, xx + u
        inside = (ty >= 0) & (ty < H) & (tx >= 0) & (tx < W)
        same_label = np.zeros_like(inside)
        same_label[inside] = s.labels[t + 1, ty[inside], tx[inside]] == s.labels[t][inside]
        moved = s.frames[t + 1, ty[same_label], tx[same_label]]
        match = np.all(moved == s.frames[t][same_label], axis=-1).mean()
        assert same_label.mean() > 0.8 and match > 0.97, (t, same_label.mean(), match)


def test_classes_differ_in_colour():
    s = make_scene(np.random.default_rng(4), frames=3, height=64, width=64, classes=4, objects=4)
    means = {c: s.frames[s.labels == c].mean(0) for c in np.unique(s.labels)}
    assert len(means) >= 2
    cs = sorted(means)
    for a in cs:
        for b in cs:
            if a < b:
                assert np.abs(means[a] - means[b]).max() > 30


def test_foreground_classes_come_in_turn():
    rng = np.random.default_rng(0)
    counts = np.zeros(4, int)
    for _ in range(12):
        s = make_scene(rng, frames=1, height=96, width=96, classes=4, objects=3)
        counts += np.bincount(s.labels.ravel(), minlength=4) > 0
    assert counts[1:].min() >= 11, counts  # 3 objects, 3 foreground classes: each in (nearly) every scene
