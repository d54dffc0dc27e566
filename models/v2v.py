"""V2V nets as code (Tran et al. 2016, "Deep End2End Voxel2Voxel Prediction").

One function per architecture, each returning a list of ``protospec.Layer``:

  c3d_encoder(...)      C3D conv1a … conv5b (+ pool1 … pool4), the part copied from C3D
  v2v_decoder(...)      the V2V head: deconv5, conv4c, concat4, deconv4, conv3c, concat3,
                        deconv3, conv_pre (paper names) — or the release's names
  remove_skip_decoder() V2V without the conv3c/conv4c skip branches
  up_head(level)        ConvNb+Up: conv_pre on convNb + fixed TrilinearUpsample to input size

``VARIANTS`` lists every net of the paper (and the release variants), each with all its
facts: the paper results it reproduces (models.paper), init, solver, size; ``build(variant,
kind)`` gives the text of its train_val / deploy net, ``solver_text(variant)`` its solver,
``paper_value(net, testset)`` the paper's number for it. ``python -m models.generate``
writes the prototxts to prototxt/ and the nets tables into README.md and models/NETS.md.

Dialect: C3D-v1.1 layer types (Convolution3D, Deconvolution3D, Pooling3D) and mainline
Caffe layers that C3D-v1.1 has; anything new is a Python layer (models.pylayers) so the
files run on the authors' Caffe too. 2D-V2V ("every 3D op made 2D") is written in the same
dialect with kernel_depth 1, temporal_stride 1, temporal_pad 0: frames are processed
independently, exactly a 2D net applied per frame.

Data: train_val nets read clips with the Python layer ``data_prep.layers.ClipDataLayer``
(param_str JSON: db, task, batch_size, crop, length, mirror, train, mean, scale,
flow_scale, seed). ``data_source="input"`` swaps it for Input layers (tests, tools).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from models import paper
from models.paths import db_rel
from models.protospec import Enum, Layer, render_net, render_solver

# Where the converted C3D model and mean live by default (tools/convert_c3d.py writes them).
C3D_DIR = "data/c3d"
C3D_WEIGHTS = f"{C3D_DIR}/c3d_sport1m.caffemodel"
C3D_MEAN = f"{C3D_DIR}/sport1m_train16_128_mean.npy"

C3D_CHANNELS = {"conv1a": 64, "conv2a": 128, "conv3a": 256, "conv3b": 256,
                "conv4a": 512, "conv4b": 512, "conv5a": 512, "conv5b": 512}
DECODER_CHANNELS = 64

PAPER_NAMES = dict(deconv5="deconv5", conv4c="conv4c", concat4="concat4", deconv4="deconv4",
                   conv3c="conv3c", concat3="concat3", deconv3="deconv3", conv_pre="conv_pre")
RELEASE_NAMES = dict(deconv5="deconv5b", conv4c="predict4b", concat4="concat1",
                     deconv4="deconv4b", conv3c="predict3b", concat3="concat2",
                     deconv3="deconv3b", conv_pre="predict")


# --------------------------------------------------------------------------- layer helpers
def _gauss(std=0.01):
    return {"type": "gaussian", "std": std}


def _const(v):
    return {"type": "constant", "value": float(v)}


def _lr(frozen: bool, train: bool):
    if not train:
        return None
    if frozen:  # release: C3D layers kept fixed (blobs_lr 0)
        return [{"lr_mult": 0, "decay_mult": 0}, {"lr_mult": 0, "decay_mult": 0}]
    return [{"lr_mult": 1, "decay_mult": 1}, {"lr_mult": 2, "decay_mult": 0}]


def conv3d(name, bottom, num, *, k=3, kd=3, s=1, ts=1, pad=1, tpad=1, bias=1.0,
           frozen=False, train=True, deconv=False, top=None):
    p = {"num_output": num, "kernel_size": k, "kernel_depth": kd, "stride": s,
         "temporal_stride": ts, "pad": pad, "temporal_pad": tpad,
         "weight_filler": _gauss(), "bias_filler": _const(bias)}
    return Layer(name, "Deconvolution3D" if deconv else "Convolution3D", bottom, top or name,
                 param=_lr(frozen, train), convolution3d_param=p)


def relu(name, blob):
    return Layer(name, "ReLU", blob, blob)


def pool3d(name, bottom, *, k=2, kd=2, s=2, ts=2):
    return Layer(name, "Pooling3D", bottom, name,
                 pooling3d_param={"pool": Enum("MAX"), "kernel_size": k, "kernel_depth": kd,
                                  "stride": s, "temporal_stride": ts})


# --------------------------------------------------------------------------- architectures
def c3d_encoder(bottom="data", *, upto="conv5b", twod=False, frozen=False, train=True,
                width=1):
    """C3D conv1a … ``upto`` with ReLUs and pool1 … pool4 (no pool5). ``twod``: every
    kernel_depth/temporal stride 1 and temporal pad 0. ``width`` divides channel counts
    (tests only)."""
    t = 1 if twod else None
    layers, prev = [], bottom
    plan = [("conv1a", None), ("pool1", (1, 1)), ("conv2a", None), ("pool2", (2, 2)),
            ("conv3a", None), ("conv3b", None), ("pool3", (2, 2)), ("conv4a", None),
            ("conv4b", None), ("pool4", (2, 2)), ("conv5a", None), ("conv5b", None)]
    for name, pool in plan:
        if pool:
            kd, ts = pool
            layers.append(pool3d(name, prev, kd=1 if twod else kd, ts=1 if twod else ts))
        else:
            layers += [conv3d(name, prev, C3D_CHANNELS[name] // width, kd=t or 3, tpad=0 if twod else 1,
                              bias=0.0 if name == "conv1a" else 1.0, frozen=frozen, train=train),
                       relu("relu" + name[4:], name)]
        prev = name
        if name == upto:
            break
    return layers


def v2v_decoder(*, K, deconv5_from="conv5b", names=PAPER_NAMES, twod=False, train=True,
                width=1, conv_c_relu=False):
    """The V2V head (docs/fidelity.md, "The network"). ``deconv5_from``: conv5b (paper) or conv5a (release).
    conv3c/conv4c have no ReLU (as the release; the paper's figure does not say)."""
    n = names
    c = DECODER_CHANNELS // width
    kd, ts, tp = (1, 1, 0) if twod else (4, 2, 1)
    L = []

    def deconv(name, bottom, k, s, p, kd_, ts_, tp_):
        return [conv3d(n[name], bottom, c, k=k, kd=kd_, s=s, ts=ts_, pad=p, tpad=tp_,
                       deconv=True, train=train), relu("relu_" + n[name], n[name])]

    def reducer(name, bottom):
        out = [conv3d(n[name], bottom, c, kd=1 if twod else 3, tpad=0 if twod else 1, train=train)]
        return out + ([relu("relu_" + n[name], n[name])] if conv_c_relu else [])

    L += deconv("deconv5", deconv5_from, 4, 2, 1, kd, ts, tp)
    L += reducer("conv4c", "conv4b")
    L.append(Layer(n["concat4"], "Concat", [n["deconv5"], n["conv4c"]], n["concat4"],
                   concat_param={"axis": 1}))
    L += deconv("deconv4", n["concat4"], 4, 2, 1, kd, ts, tp)
    L += reducer("conv3c", "conv3b")
    L.append(Layer(n["concat3"], "Concat", [n["deconv4"], n["conv3c"]], n["concat3"],
                   concat_param={"axis": 1}))
    # Deconv3: L 4/2/1, H,W 8/4/2 (the only reading of the paper's "8×4×4 / 4×2×2 / 2×1×1"
    # that gives 16×112×112, and the release's).
    L += deconv("deconv3", n["concat3"], 8, 4, 2, kd, ts, tp)
    L.append(conv3d(n["conv_pre"], n["deconv3"], K, kd=1 if twod else 3,
                    tpad=0 if twod else 1, train=train))
    return L, n["conv_pre"]


def remove_skip_decoder(*, K, train=True, width=1):
    """V2V-remove-skip: conv5b → deconv5 → deconv4 → deconv3 → conv_pre, one stream."""
    n, c = PAPER_NAMES, DECODER_CHANNELS // width
    L = []
    prev = "conv5b"
    for name, (k, s, p) in (("deconv5", (4, 2, 1)), ("deconv4", (4, 2, 1)), ("deconv3", (8, 4, 2))):
        L += [conv3d(n[name], prev, c, k=k, kd=4, s=s, ts=2, pad=p, tpad=1, deconv=True, train=train),
              relu("relu_" + n[name], n[name])]
        prev = n[name]
    L.append(conv3d(n["conv_pre"], prev, K, train=train))
    return L, n["conv_pre"]


def up_head(level: str, *, K, train=True, ref="data"):
    """ConvNb+Up: a prediction conv (like conv_pre) on ``level`` and a fixed trilinear
    upsampling (models.pylayers.TrilinearUpsample) to the size of the input clip."""
    return [conv3d("conv_pre", level, K, train=train),
            Layer("upsample", "Python", ["conv_pre", ref], "upsample",
                  python_param={"module": "models.pylayers", "layer": "TrilinearUpsample",
                                "param_str": json.dumps({"align_corners": False})})], "upsample"


# --------------------------------------------------------------------------- variants
@dataclass(frozen=True)
class Variant:
    """One net of prototxt/ and every fact about it: architecture and task, how it is
    trained (``init``, solver) and what it reproduces (``paper``: the paper's results it is
    compared with; ``paper_note``: how it relates to them). ``params`` and ``gflop`` are
    measured on its deploy net (1×C×16×112×112 input, a multiply-add counts 2 FLOPs) and
    checked by tests/test_nets.py against a hand count and models.shapes."""
    key: str                 # file stem
    title: str
    task: str                # seg | flow | color
    arch: str                # v2v | remove_skip | conv3b_up | conv4b_up | conv5b_up
    init: str                # c3d | scratch | key of the net whose final snapshot it fine-tunes
    paper: tuple = ()        # models.paper.PaperResult values this net is compared with
    paper_note: str = ""
    teacher: tuple = ()      # results of the flow teacher scored on this net's data (--teacher)
    params: int = 0
    gflop: float = 0.0
    fold: int | None = None  # a fold of the Sintel 3-fold run (tools.train --sintel-3fold)
    twod: bool = False
    deconv5_from: str = "conv5b"
    frozen: bool = False
    names: str = "paper"
    loss: str = "softmax"    # softmax | huber | euclidean | clipped
    flow_scale: float = 1.0  # targets × flow_scale; deploy outputs × 1/flow_scale
    solver: dict = field(default_factory=dict)
    solver_notes: dict = field(default_factory=dict)
    solver_file: str = ""    # default <key>_solver.prototxt
    choices: str = ""        # paper-vs-release notes for the header
    db: tuple = ()           # (dataset, train split, test split); default per task
    deploy: str = ""         # another variant's deploy file (same net), or "" for its own

    @property
    def K(self):
        return {"seg": 8, "flow": 2, "color": 3}[self.task]

    @property
    def C(self):
        return 1 if self.task == "color" else 3

    @property
    def dataset(self):
        return self.db[0] if self.db else \
            {"seg": "gatech", "flow": "ucf101_flow", "color": "ucf101_color"}[self.task]

    @property
    def splits(self):
        return self.db[1:] if self.db else ("train", "test")

    @property
    def deploy_name(self):
        return f"{self.deploy or self.key}_deploy.prototxt"

    @property
    def solver_name(self):
        return self.solver_file or f"{self.key}_solver.prototxt"

    @property
    def paper_row(self) -> str:
        note = f" — {self.paper_note}" if self.paper_note else ""
        return "; ".join(r.text() for r in self.paper) + note

    @property
    def init_text(self) -> str:
        if self.init == "c3d":
            return "C3D, C3D layers frozen" if self.frozen else "C3D, all layers trained"
        return "scratch" if self.init == "scratch" else f"{self.init}'s final snapshot (fine-tune)"

    @property
    def weights(self) -> str:
        """The caffemodel training starts from ("" from scratch): C3D's converted weights, or
        the final snapshot of the net named by ``init``."""
        if self.init == "scratch":
            return ""
        return C3D_WEIGHTS if self.init == "c3d" else variant(self.init).final_weights

    @property
    def run_dir(self) -> str:
        """The run folder training writes (runs/<net>); our tools take it as ``--weights`` (its
        newest snapshot, models.paths.resolve_weights)."""
        return solver_fields(self)["snapshot_prefix"].rsplit("/snapshots/", 1)[0]

    @property
    def tool_weights(self) -> str:
        """``weights`` as our tools take it: a run folder instead of the final snapshot."""
        return self.weights if self.init in ("c3d", "scratch") else variant(self.init).run_dir

    @property
    def final_weights(self) -> str:
        """The snapshot training writes at max_iter (the solver's snapshot_prefix)."""
        return f"{solver_fields(self)['snapshot_prefix']}_iter_{self.solver['max_iter']}.caffemodel"

    def files(self):
        """The files this variant writes (train_val, [deploy], solver)."""
        own = [] if self.deploy else [self.deploy_name]
        return [f"{self.key}_train_val.prototxt"] + own + [self.solver_name]


R = "release (the paper gives none)"
SEG_SOLVER = dict(base_lr=1e-4, lr_policy="step", gamma=0.1, stepsize=30000, max_iter=100000,
                  momentum=0.9, weight_decay=0.005, test_iter=426, test_interval=10000,
                  snapshot=10000)
SEG_NOTES = dict(base_lr="paper", stepsize="paper: ÷10 every 30K", max_iter="paper: 100K",
                 momentum=R, weight_decay=R, test_iter="426 GATECH test clips (release list)",
                 test_interval="ours", snapshot="ours")
SEG_BASELINE_NOTES = dict(SEG_NOTES, base_lr="paper's V2V value (none given for the baselines)",
                          stepsize="paper's V2V value", max_iter="paper's V2V value")
FLOW_SOLVER = dict(base_lr=1e-8, lr_policy="step", gamma=0.1, stepsize=200000, max_iter=800000,
                   momentum=0.9, weight_decay=0.0005, test_iter=1000, test_interval=50000,
                   snapshot=50000)
FLOW_NOTES = dict(base_lr="paper", stepsize="paper: ÷10 every 200K", max_iter="paper: 800K",
                  momentum=R, weight_decay=R, test_iter="ours", test_interval="ours",
                  snapshot="ours")
FLOW_REL_SOLVER = dict(FLOW_SOLVER, base_lr=1e-7, max_iter=1200000)
FLOW_REL_NOTES = dict(FLOW_NOTES, base_lr="release", stepsize="release", max_iter="release: 1.2M",
                      momentum="release", weight_decay="release")
COLOR_SOLVER = dict(FLOW_SOLVER, max_iter=600000)
COLOR_NOTES = dict(FLOW_NOTES, max_iter="paper: 600K",
                   momentum="release flow solver (the paper gives none; no colour release)",
                   weight_decay="release flow solver (the paper gives none; no colour release)")
SINTEL_SOLVER = dict(FLOW_SOLVER, base_lr=1e-8, stepsize=10000, max_iter=20000, test_iter=30,
                     test_interval=2000, snapshot=5000)
SINTEL_NOTES = dict(FLOW_NOTES, base_lr="paper's flow value (no fine-tuning schedule given)",
                    stepsize="ours", max_iter="ours (the paper gives no fine-tuning schedule)",
                    test_iter="ours (one pass over a fold's test clips)")

RELEASE = "as the authors' release prototxt"
V2V_SIZE = dict(params=33_715_784, gflop=117.1)  # seg (K = 8) V2V deploy net
_seg = dict(task="seg", solver=SEG_SOLVER, solver_notes=SEG_NOTES)
_seg_base = dict(_seg, solver_notes=SEG_BASELINE_NOTES)
_seg_scratch = dict(_seg_base, init="scratch")
_c3d = dict(_seg_base, init="c3d")
SEG_VARIANTS = [
    Variant("seg_v2v", "V2V semantic segmentation (paper)", arch="v2v", init="c3d",
            paper=(paper.SEG_V2V,), solver_file="seg_solver.prototxt", **V2V_SIZE,
            choices="paper: whole net fine-tuned from C3D; deconv5 on conv5b", **_seg),
    Variant("seg_v2v_release", "V2V semantic segmentation (authors' release prototxt)", arch="v2v",
            init="c3d", frozen=True, deconv5_from="conv5a", names="release",
            paper=(paper.SEG_V2V,), paper_note=RELEASE, **V2V_SIZE,
            choices="release: C3D layers frozen (lr_mult 0); deconv5b on conv5a (conv5b computed, "
                    "silenced); release layer names", **_seg),
    Variant("seg_v2v_0", "V2V-0 (V2V from scratch)", arch="v2v", paper=(paper.SEG_V2V_0,),
            **V2V_SIZE, choices="paper: from scratch", **_seg_scratch),
    Variant("seg_v2v_remove_skip", "V2V-remove-skip", arch="remove_skip",
            paper=(paper.SEG_REMOVE_SKIP,), params=31_077_832, gflop=96.6,
            choices="paper: no conv3c/conv4c branches", **_c3d),
    Variant("seg_v2v_remove_skip_0", "V2V-remove-skip-0", arch="remove_skip",
            paper=(paper.SEG_REMOVE_SKIP_0,), params=31_077_832, gflop=96.6,
            choices="paper: no conv3c/conv4c branches, from scratch", **_seg_scratch),
    Variant("seg_conv3b_up", "Conv3b+Up", arch="conv3b_up", paper=(paper.SEG_CONV3B_UP,),
            params=2_936_584, gflop=58.3,
            choices="paper: prediction conv on conv3b + fixed trilinear upsampling", **_c3d),
    Variant("seg_conv4b_up", "Conv4b+Up", arch="conv4b_up", paper=(paper.SEG_CONV4B_UP,),
            params=13_609_736, gflop=74.4,
            choices="paper: prediction conv on conv4b + fixed trilinear upsampling", **_c3d),
    Variant("seg_conv5b_up", "Conv5b+Up", arch="conv5b_up", paper=(paper.SEG_CONV5B_UP,),
            params=27_766_536, gflop=77.1,
            choices="paper: prediction conv on conv5b + fixed trilinear upsampling", **_c3d),
    Variant("seg_2d_v2v", "2D-V2V", arch="v2v", twod=True, paper=(paper.SEG_2D_V2V,),
            params=10_847_432, gflop=82.1,
            choices="paper: every 3D conv/pool/deconv made 2D (kernel_depth 1, temporal stride 1, "
                    "temporal pad 0), from scratch", **_seg_scratch),
]
FLOW_V2V = Variant(
    "flow_v2v", "V2V optical flow (paper)", task="flow", arch="v2v", init="scratch",
    paper=(paper.FLOW_UCF101, paper.FLOW_SINTEL), teacher=(paper.BROX_SINTEL,),
    params=33_705_410, gflop=112.9,
    loss="huber", flow_scale=1 / 15, solver=FLOW_SOLVER, solver_notes=FLOW_NOTES,
    solver_file="flow_solver.prototxt",
    choices="paper: Huber loss as printed (|x| beyond 1), targets = flow/15, from scratch")
SINTEL_FOLDS = [Variant(
    f"flow_v2v_sintel_fold{k}", f"finetuned-V2V flow on MPI-Sintel, fold {k} of 3",
    task="flow", arch="v2v", init="flow_v2v", paper=(paper.SINTEL_3FOLD,),
    paper_note=f"fold {k} of 3", params=FLOW_V2V.params, gflop=FLOW_V2V.gflop, fold=k,
    loss="huber", flow_scale=1 / 15, solver=SINTEL_SOLVER, solver_notes=SINTEL_NOTES,
    db=("sintel", f"final_fold{k}_train", f"final_fold{k}_test"), deploy="flow_v2v",
    choices="paper: V2V flow fine-tuned on Sintel ground truth, 3-fold cross validation; "
            "ours: the final pass (Table 2 compares with FlowFields' final-pass 5.81), folds "
            "of data_prep.sintel, the same net and loss as flow_v2v (deploy: "
            "flow_v2v_deploy.prototxt)") for k in range(3)]
OTHER_VARIANTS = [
    Variant("flow_v2v_release", "V2V optical flow (authors' release prototxt)", task="flow",
            arch="v2v", init="scratch", paper=(paper.FLOW_UCF101,), paper_note=RELEASE,
            params=33_705_410, gflop=112.9, loss="euclidean", flow_scale=0.125, names="release",
            solver=FLOW_REL_SOLVER, solver_notes=FLOW_REL_NOTES,
            choices="release: EuclideanLoss, truth scale 0.125 (α=8), base_lr 1e-7, 1.2M iters; "
                    "release layer names; deconv5b on conv5b as the paper (only the release's seg net "
                    "reads conv5a)"),
    Variant("color_v2v", "V2V video colorization", task="color", arch="v2v", init="scratch",
            paper=(paper.COLOR_V2V,), params=33_703_683, gflop=112.2, loss="euclidean",
            solver=COLOR_SOLVER, solver_notes=COLOR_NOTES, solver_file="color_solver.prototxt",
            choices="paper: gray input C=1, RGB in [0,1] K=3, L2 (EuclideanLoss), from scratch"),
    Variant("color_2d_v2v", "2D-V2V video colorization", task="color", arch="v2v", twod=True,
            init="scratch", paper=(paper.COLOR_2D_V2V,), params=10_843_395, gflop=80.5,
            loss="euclidean", solver=COLOR_SOLVER, solver_notes=COLOR_NOTES,
            choices="paper: 2D-V2V (kernel_depth 1 everywhere), L2, from scratch"),
]
VARIANTS = SEG_VARIANTS + [FLOW_V2V] + SINTEL_FOLDS + OTHER_VARIANTS
BY_KEY = {v.key: v for v in VARIANTS}


def variant(key: str) -> Variant:
    if key not in BY_KEY:
        raise KeyError(f"unknown net '{key}'; known: {', '.join(BY_KEY)}")
    return BY_KEY[key]


def paper_value(name: str, testset: str | None = None) -> float | None:
    """The paper's value for net ``name`` (or "brox_teacher", the flow teacher) on
    ``testset`` (gatech | ucf101 | sintel; None: the net's first result); None where the
    paper gives none."""
    if name == "brox_teacher":
        results = [r for v in VARIANTS for r in v.teacher]
    else:
        results = BY_KEY[name].paper if name in BY_KEY else ()
    return next((r.value for r in results if testset in (None, r.testset)), None)


# --------------------------------------------------------------------------- data and heads
def data_params(v: Variant, train: bool, batch_size=1) -> dict:
    finetuned = v.task == "seg"
    return {"db": db_rel(v.dataset, v.splits[0] if train else v.splits[1]), "task": v.task,
            "batch_size": batch_size, "crop": 112, "length": 16, "mirror": train,
            "train": train, "mean": C3D_MEAN if finetuned else None,
            # colour: gray input in [0, 1] like the RGB target (ours: the paper gives no range)
            "scale": 1 / 255 if v.task == "color" else 1.0,
            "flow_scale": v.flow_scale if v.task == "flow" else 1.0, "seed": 1701,
            # C3D's sport1m weights and mean come from OpenCV (BGR) frames: seg nets (fine-
            # tuned from C3D, and their from-scratch baselines with the same input) use BGR.
            "channels": "bgr" if v.task == "seg" else "rgb"}


def data_layers(v: Variant, source: str, input_shape):
    if source == "db":
        out = []
        for phase, train in (("TRAIN", True), ("TEST", False)):
            out.append(Layer("data", "Python", [], ["data", "label"],
                             include={"phase": Enum(phase)},
                             python_param={"module": "data_prep.layers", "layer": "ClipDataLayer",
                                           "param_str": json.dumps(data_params(v, train))}))
        return out
    if source == "input":
        N, C, Lc, H, W = input_shape
        lab_c = 1 if v.task == "seg" else v.K
        shapes = [{"dim": [N, C, Lc, H, W]}, {"dim": [N, lab_c, Lc, H, W]}]
        return [Layer("data", "Input", [], ["data", "label"], input_param={"shape": shapes})]
    raise ValueError(f"data source must be 'db' or 'input', got {source!r}")


def loss_layers(v: Variant, score: str):
    if v.task == "seg":
        return [Layer("loss", "SoftmaxWithLoss", [score, "label"], "loss",
                      softmax_param={"axis": 1},
                      loss_param={"ignore_label": 255, "normalization": Enum("FULL")}),
                Layer("accuracy", "Accuracy", [score, "label"], "accuracy",
                      include={"phase": Enum("TEST")},
                      accuracy_param={"axis": 1, "ignore_label": 255})]
    if v.loss == "huber":
        return [Layer("loss", "Python", [score, "label"], "loss", loss_weight=1.0,
                      python_param={"module": "models.pylayers", "layer": "HuberLoss",
                                    "param_str": json.dumps({"variant": "paper"})})]
    if v.loss == "clipped":
        return [Layer("loss", "Python", [score, "label"], "loss", loss_weight=1.0,
                      python_param={"module": "models.pylayers", "layer": "ClippedEuclideanLoss"})]
    # Caffe's EuclideanLoss divides by num(), a legacy accessor that aborts on 5D blobs:
    # flatten both to N×(C·L·H·W) first (same sum, same ÷2N).
    return [Layer("flat_pred", "Flatten", score, "flat_pred"),
            Layer("flat_label", "Flatten", "label", "flat_label"),
            Layer("loss", "EuclideanLoss", ["flat_pred", "flat_label"], "loss")]


def output_layers(v: Variant, score: str):
    if v.task == "seg":
        return [Layer("prob", "Softmax", score, "prob", softmax_param={"axis": 1})]
    if v.task == "flow":
        # α applied here and nowhere else: the net predicts flow × flow_scale.
        return [Layer("flow", "Power", score, "flow", power_param={"scale": 1.0 / v.flow_scale})]
    return []


def body(v: Variant, train: bool, width=1):
    names = RELEASE_NAMES if v.names == "release" else PAPER_NAMES
    if v.arch.endswith("_up"):
        level = v.arch[:-3]
        layers = c3d_encoder(upto=level, train=train, width=width)
        head, score = up_head(level, K=v.K, train=train)
        return layers + head, score
    layers = c3d_encoder(twod=v.twod, frozen=v.frozen, train=train, width=width)
    if v.arch == "remove_skip":
        head, score = remove_skip_decoder(K=v.K, train=train, width=width)
    else:
        head, score = v2v_decoder(K=v.K, deconv5_from=v.deconv5_from, names=names, twod=v.twod,
                                  train=train, width=width)
        if v.deconv5_from == "conv5a":
            head.append(Layer("silence_conv5b", "Silence", "conv5b", []))
    return layers + head, score


def header(v: Variant, kind: str) -> str:
    what = {"train_val": "train/test net", "deploy": "deploy net (Input 1×C×16×112×112)"}[kind]
    naming = ("release layer names (deconv5b, predict4b, concat1, deconv4b, predict3b, concat2, "
              "deconv3b, predict)" if v.names == "release" else
              "paper layer names (deconv5, conv4c, concat4, deconv4, conv3c, concat3, deconv3, conv_pre)")
    out = [f"{v.title}: {what}.",
           f"Paper row: {v.paper_row}. Init: {v.init_text}.",
           f"Choices: {v.choices}.",
           f"Task {v.task}: input C={v.C}, K={v.K} outputs. C3D layers conv1a…conv5b keep C3D's names "
           f"(-weights copies them by name); head uses {naming}.",
           "Fillers (release): gaussian std 0.01, bias 1, conv1a bias 0."]
    if v.task == "seg":
        out.append("Loss: voxel softmax (SoftmaxWithLoss axis 1), label 255 (void) ignored, "
                   "normalization FULL = ÷ N·L·H·W as the release (the paper does not say).")
        if kind == "deploy":
            out.append("Output: prob (N×8×L×H×W class probabilities).")
    elif v.task == "flow":
        a = round(1 / v.flow_scale, 6)
        loss = "HuberLoss (Python, paper eq. 1, summed ÷ N)" if v.loss == "huber" else \
            "EuclideanLoss (sum ÷ 2N)"
        out.append(f"Loss: {loss} on targets = flow × {v.flow_scale:.6g} (α={a:g}).")
        if kind == "deploy":
            out.append(f"Output: flow in pixels (N×2×L×H×W, u then v) = prediction × α={a:g} "
                       "(Power layer; the only place α is applied).")
    else:
        out.append("Loss: EuclideanLoss (L2, sum ÷ 2N) on RGB in [0,1]; input gray in [0,1] "
                   "(data layer scale 1/255; ours: the paper gives no input range).")
        if kind == "deploy":
            out.append("Output: the prediction blob (N×3×L×H×W, RGB in [0,1]).")
    out.append("Input sizes: L a multiple of 8, H and W multiples of 16.")
    out.append("Generated by models/generate.py — do not edit.")
    return "\n".join(out)


def build(v: Variant | str, kind: str = "train_val", *, data_source: str = "db",
          input_shape=None, width: int = 1, title: bool = True) -> str:
    """Net text. kind: train_val | deploy. data_source (train_val): db (ClipDataLayer) or
    input (Input layers of ``input_shape`` = (N, C, L, H, W) for data and label)."""
    v = variant(v) if isinstance(v, str) else v
    if kind == "deploy":
        shape = input_shape or (1, v.C, 16, 112, 112)
        layers = [Layer("data", "Input", [], "data", input_param={"shape": {"dim": list(shape)}})]
        b, score = body(v, train=False, width=width)
        layers += b + output_layers(v, score)
    elif kind == "train_val":
        layers = data_layers(v, data_source, input_shape or (1, v.C, 16, 112, 112))
        b, score = body(v, train=True, width=width)
        layers += b + loss_layers(v, score)
    else:
        raise ValueError(f"kind must be train_val or deploy, got {kind!r}")
    return render_net(v.key, layers, header(v, kind) if title else "")


def solver_fields(v: Variant | str, *, net: str | None = None, **overrides) -> dict:
    """The solver's fields (``overrides`` replace any of them)."""
    v = variant(v) if isinstance(v, str) else v
    s = dict(v.solver)
    fields = {"net": net or f"prototxt/{v.key}_train_val.prototxt",
              "test_iter": s.pop("test_iter"), "test_interval": s.pop("test_interval"),
              "test_initialization": False}
    fields.update(s)
    fields.update(display=20, average_loss=20, snapshot_prefix=f"runs/{v.key}/snapshots/{v.key}")
    fields.update(overrides)
    return fields


def solver_text(v: Variant | str, *, net: str | None = None, **overrides) -> str:
    v = variant(v) if isinstance(v, str) else v
    head = (f"{v.title}: solver. Paper row: {v.paper_row}.\n"
            f"Values from the paper unless marked; the release's where the paper gives none.\n"
            f"Run from the repo root: caffe train -solver prototxt/{v.solver_name}"
            + (f" -weights {v.weights}" if v.weights else "") + "\n"
            "Generated by models/generate.py — do not edit.")
    return render_solver(solver_fields(v, net=net, **overrides), head, v.solver_notes)


def all_files() -> dict[str, str]:
    """{file name: text} of every generated prototxt."""
    out = {}
    for v in VARIANTS:
        out[f"{v.key}_train_val.prototxt"] = build(v, "train_val")
        if not v.deploy:
            out[v.deploy_name] = build(v, "deploy")
        out[v.solver_name] = solver_text(v)
    return out


__all__ = ["VARIANTS", "Variant", "build", "solver_fields", "solver_text", "all_files", "variant",
           "paper_value",
           "c3d_encoder", "v2v_decoder", "remove_skip_decoder", "up_head"]
