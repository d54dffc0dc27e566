"""Device, precision and compilation options shared by training, inference and the bench.

    opts = RunOptions(device="cuda", precision="bf16", channels_last=True, compile=False)
    model = opts.prepare(net)               # moves, converts and (optionally) compiles
    with opts.autocast():
        out = model(opts.batch(inputs))

precision: "fp32" (default; on CUDA TF32 matmul/conv unless tf32=False), "bf16" (autocast
to bfloat16; losses are computed in float32 either way), "tf32" (same as fp32 with TF32 on).
channels_last: NDHWC memory format for 5D blobs (cuDNN's fast 3D conv path on recent GPUs).
On CPU every option is accepted, but only fp32 is used for parity.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class RunOptions:
    device: str = "cpu"
    precision: str = "fp32"          # fp32 | tf32 | bf16
    channels_last: bool = False
    compile: bool = False
    tf32: bool = True

    def __post_init__(self):
        if self.precision not in ("fp32", "tf32", "bf16"):
            raise ValueError(f"precision must be fp32, tf32 or bf16, got {self.precision!r}")
        if str(self.device).startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError("device cuda requested but torch sees no CUDA GPU "
                               f"(torch {torch.__version__}; the pinned CPU wheel has no CUDA)")

    @property
    def is_cuda(self) -> bool:
        return str(self.device).startswith("cuda")

    def configure_backends(self):
        if self.is_cuda:
            tf32 = self.tf32 or self.precision == "tf32"
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
            torch.backends.cudnn.benchmark = True

    def prepare(self, net):
        self.configure_backends()
        net.to(self.device)
        if self.channels_last:
            for p in net.parameters():
                if p.dim() == 5:
                    p.data = p.data.contiguous(memory_format=torch.channels_last_3d)
        model = net
        if self.compile:
            model = torch.compile(net)
        return model

    def batch(self, inputs: dict) -> dict:
        out = {}
        for k, v in inputs.items():
            v = torch.as_tensor(v).to(self.device, non_blocking=True)
            if self.channels_last and v.dim() == 5 and v.is_floating_point():
                v = v.contiguous(memory_format=torch.channels_last_3d)
            out[k] = v
        return out

    def autocast(self):
        if self.precision == "bf16":
            dev = "cuda" if self.is_cuda else "cpu"
            return torch.autocast(dev, dtype=torch.bfloat16)
        return contextlib.nullcontext()
