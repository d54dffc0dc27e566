"""Caffe Python data layer reading V2V clip databases (data_prep.db).

    layer { name: "data" type: "Python" top: "data" top: "label"
      python_param { module: "data_prep.layers" layer: "ClipDataLayer"
                     param_str: '{"db": "data/db/gatech/train", "task": "seg", "crop": 112, ...}' } }

param_str (JSON):

- ``db`` (str, required): database folder; relative paths resolve against the repo root
  (models.paths.resolve_repo_path), so prototxts work from any directory.
- ``task``: "seg" | "flow" | "color".
- ``batch_size`` (int, 1): clips per forward.
- ``crop`` (int or null): square spatial crop (112 in the paper); null = whole frames.
- ``length`` (int, default the stored clip length): frames per emitted clip; it must divide
  the stored length, each stored clip then gives stored/length consecutive sub-clips.
- ``mirror`` (bool, false): with ``train``, flip each clip left-right with probability ½;
  a mirrored flow target has its u component negated.
- ``train`` (bool, false): true = random crop position, random mirror, a new random order
  of the clips every epoch; false = centre crop, no mirror, database order (cycling).
- ``mean`` (null or path to .npy): subtracted from the input. Shape (C,) per channel, or
  (C, L, H, W) per voxel like C3D's mean: a mean larger than the stored frames is first
  centre-cropped to the frames' size, then the crop window of the clip is taken from it at
  the same offset as from the frames (Caffe/C3D's transformer does the same); L must be
  the emitted or the stored length. For task color C is 1.
- ``scale`` (float, 1): multiplies the input after mean subtraction.
- ``flow_scale`` (float, 1): multiplies flow targets (paper 1/15, release 0.125).
- ``seed`` (int, 0): the order, crops and mirrors are a function of the seed alone.
- ``channels`` (optional, "rgb" | "bgr", default "rgb"): channel order of the input. C3D's
  sport1m weights and mean were made from OpenCV-read (BGR) frames; use "bgr" with them.
- ``prefetch`` (optional int, 4): batches prepared ahead by a background thread.

Tops:

- ``data`` float32 (N, C, L, H, W): seg/flow C=3, RGB (or BGR) 0–255 minus mean, × scale;
  color C=1, gray = 0.299 R + 0.587 G + 0.114 B on the 0–255 scale, minus mean, × scale
  (set scale 1/255 for a [0,1] input).
- ``label``: seg (N,1,L,H,W) float class ids, 255 = void (ignored by the loss);
  flow (N,2,L,H,W) float (u, v) × flow_scale, flow t = frame t → t+1 in pixels;
  color (N,3,L,H,W) RGB in [0, 1].

``ClipDataLayer.infer_top_shapes(param_str)`` gives the top shapes from the manifest alone.
``ClipSource(params)`` is the same sampler without Caffe, for tools and the torch runtime;
``ClipPrep`` (data_prep.clips) is its preparation of one clip, which tools.evaluate and
tools.predict use too.
"""
from __future__ import annotations

import os

from data_prep.clips import ClipSource, Prefetcher, load_manifest, parse_params, top_shapes
from models.engine import caffe


class ClipDataLayer(caffe().Layer):
    """See the module docstring."""

    @classmethod
    def infer_top_shapes(cls, param_str: str, bottom_shapes=None) -> list[tuple]:
        p = parse_params(param_str)
        db, man = load_manifest(p)
        return top_shapes(p, db, man)

    def setup(self, bottom, top):
        if len(bottom) != 0:
            raise Exception("ClipDataLayer takes no bottoms")
        if len(top) != 2:
            raise Exception("ClipDataLayer has two tops: data and label")
        self.source = ClipSource(self.param_str)
        # tools.train sets V2V_START_ITER (iterations × iter_size) when it resumes from a
        # snapshot: the TRAIN data continue where the interrupted run stopped.
        start = int(os.environ.get("V2V_START_ITER", "0") or 0)
        if start and self.phase == caffe().TRAIN:
            self.source.skip(start)
        self.prefetch = Prefetcher(self.source, self.source.p["prefetch"])

    def reshape(self, bottom, top):
        top[0].reshape(*self.source.shapes[0])
        top[1].reshape(*self.source.shapes[1])

    def forward(self, bottom, top):
        x, y = self.prefetch.get()
        top[0].data[...] = x
        top[1].data[...] = y

    def backward(self, top, propagate_down, bottom):
        pass

    def __del__(self):
        pf = getattr(self, "prefetch", None)
        if pf is not None:
            pf.stop()
