#!/usr/bin/env python3
"""Build the Caffe engine: the pinned registry sdist plus our C3D-v1.1 3D layers.

Usage: python engine/build_caffe.py --venv .venv [--cuda] [--force]

Steps (each skipped when its result is already there):
1. fetch the pinned sdist (brocolli-caffe==9.0.2, a BVLC-based Caffe) with pip and check
   its sha256;
2. unpack it into a build folder in the cache, drop its stale generated protobuf files,
   add our messages to caffe.proto and our layer sources;
3. write Makefile.config (CPU, OpenBLAS, LMDB, HDF5, Python layers, no OpenCV) and run
   ``make lib tools pycaffe``. With --cuda: the CUDA toolkit from pinned NVIDIA wheels
   (engine/cuda_toolkit.py), CUDA_ARCH sm_80 + sm_90 (``$V2V_CUDA_ARCH`` overrides) and
   the CUDA mends (CUDA_PATCHES) too; CPU-only and CUDA builds are cached side by side;
4. install into the venv: a .pth file that puts pycaffe on sys.path, and ``bin/caffe``.

The build folder lives in the cache (``$V2V_ENGINE_CACHE`` or ``~/.cache/v2v-engine``),
named by a hash of everything that goes into it (sdist, this script, our layers and
proto, the config, Python and NumPy versions). A second run with the same inputs is a
no-op. A run with changed inputs starts from a copy of the newest finished build and
rewrites only the files that changed, so ``make`` recompiles only what depends on them.

Stdlib only: it runs before anything else is installed.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import cuda_toolkit  # engine/cuda_toolkit.py, next to this script

SDIST_NAME = "brocolli-caffe"
SDIST_VERSION = "9.0.2"
SDIST_SHA256 = "c6410cc60bdd6db685d441b66be7df05410f8850ac88d6b75d48ef9b2315c08a"
SDIST_FILE = f"{SDIST_NAME}-{SDIST_VERSION}.tar.gz"

ENGINE = Path(__file__).resolve().parent
REPO = ENGINE.parent
LAYERS = ENGINE / "layers"
PROTO_ADD = ENGINE / "proto" / "v2v_layers.proto"
WRAPPER = ENGINE / "caffe_wrapper.sh"

# Fields added to LayerParameter (C3D-v1.1's numbers).
FIELDS = (
    "  optional Convolution3DParameter convolution3d_param = 6661;\n"
    "  optional Pooling3DParameter pooling3d_param = 6662;\n"
)
KEEP_BUILDS = 2


def log(msg: str) -> None:
    print(f"[engine] {msg}", flush=True)


def die(msg: str) -> None:
    print(f"[engine] ERROR: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def numpy_include(venv: Path) -> tuple[str, str]:
    out = subprocess.run(
        [str(venv_python(venv)), "-c",
         "import numpy, sys; print(numpy.get_include()); print(numpy.__version__)"],
        check=True, capture_output=True, text=True).stdout.split()
    return out[0], out[1]


def python_paths(venv: Path) -> tuple[str, str]:
    """Include dir and version (e.g. '3.11') of the venv's base interpreter."""
    out = subprocess.run(
        [str(venv_python(venv)), "-c",
         "import sysconfig, sys; print(sysconfig.get_paths()['include']);"
         "print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
        check=True, capture_output=True, text=True).stdout.split()
    return out[0], out[1]


def makefile_config(venv: Path, cuda_home: Path | None) -> str:
    """Makefile.config; CPU_ONLY unless cuda_home (the CUDA toolkit to build with) is given."""
    py_inc, py_ver = python_paths(venv)
    _, np_ver = numpy_include(venv)
    boost_py = "boost_python" + py_ver.replace(".", "")
    lines = [
        "# Written by engine/build_caffe.py",
        "CPU_ONLY := 1" if cuda_home is None else "USE_CUDNN := 0",
        "USE_OPENCV := 0",
        "USE_LEVELDB := 0",
        "USE_LMDB := 1",
        "BLAS := open",
        "BLAS_INCLUDE := /usr/include/x86_64-linux-gnu/openblas-pthread",
        # NumPy's headers are copied into the tree (see prepare_tree): the config, and so
        # the cache key, must not depend on where this checkout's venv lives.
        f"# numpy {np_ver}",
        f"PYTHON_INCLUDE := {py_inc} $(CURDIR)/numpy-include",
        f"PYTHON_LIBRARIES := {boost_py} python{py_ver}",
        "PYTHON_LIB := /usr/lib",
        "WITH_PYTHON_LAYER := 1",
        "INCLUDE_DIRS := $(PYTHON_INCLUDE) /usr/local/include /usr/include/hdf5/serial",
        "LIBRARY_DIRS := $(PYTHON_LIB) /usr/local/lib /usr/lib "
        "/usr/lib/x86_64-linux-gnu/hdf5/serial",
                "DISTRIBUTE_DIR := distribute",
        "Q ?= @",
    ]
    if cuda_home is not None:
        lines += [f"CUDA_DIR := {cuda_home}",
                  f"CUDA_ARCH := {os.environ.get('V2V_CUDA_ARCH', cuda_toolkit.DEFAULT_ARCH)}",
                  # the wheels' libraries sit on no loader path: libcaffe and pycaffe find
                  # them through this rpath
                  f"LDFLAGS := -Wl,-rpath,{cuda_home / 'lib'}"]
    return "\n".join(lines) + "\n"


def inputs_key(config: str, cuda: bool) -> str:
    h = hashlib.sha256()
    h.update(SDIST_SHA256.encode())
    h.update(config.encode())
    h.update(b"cuda" if cuda else b"cpu")
    tools = [Path(__file__).resolve()] + ([Path(cuda_toolkit.__file__).resolve()] if cuda else [])
    for p in [*tools, PROTO_ADD, *sorted(LAYERS.rglob("*"))]:
        if p.is_file():
            h.update(str(p.relative_to(ENGINE)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def fetch_sdist(cache: Path, venv: Path) -> Path:
    dest = cache / "sdist"
    path = dest / SDIST_FILE
    if path.exists() and sha256_file(path) == SDIST_SHA256:
        return path
    dest.mkdir(parents=True, exist_ok=True)
    log(f"downloading {SDIST_NAME}=={SDIST_VERSION} (source) with pip")
    subprocess.run([str(venv_python(venv)), "-m", "pip", "download", "-q", "--no-deps",
                    "--no-binary", ":all:", "-d", str(dest),
                    f"{SDIST_NAME}=={SDIST_VERSION}"], check=False)
    if not path.exists():
        die(f"pip did not produce {path}; is PyPI reachable?")
    got = sha256_file(path)
    if got != SDIST_SHA256:
        path.unlink()
        die(f"{SDIST_FILE}: sha256 {got} does not match the pinned {SDIST_SHA256}")
    return path


def write_if_changed(path: Path, data: bytes) -> bool:
    if path.exists() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return True


def patched_proto(original: str) -> str:
    marker = "optional RecurrentParameter recurrent_param = 146;\n"
    start = original.index("message LayerParameter {")
    pos = original.index(marker, start) + len(marker)
    return original[:pos] + FIELDS + original[pos:] + "\n" + PROTO_ADD.read_text()


CAFFE_CPP_COPYLAYERS = """\
// Load the weights of the given caffemodel(s) (comma-separated) into the train and test
// nets, copying layers by name (restored by engine/build_caffe.py, as in BVLC Caffe).
void CopyLayers(caffe::Solver<float>* solver, const std::string& model_list) {
  std::vector<std::string> model_names;
  boost::split(model_names, model_list, boost::is_any_of(","));
  for (int i = 0; i < model_names.size(); ++i) {
    LOG(INFO) << "Finetuning from " << model_names[i];
    solver->net()->CopyTrainedLayersFrom(model_names[i]);
    for (int j = 0; j < solver->test_nets().size(); ++j) {
      solver->test_nets()[j]->CopyTrainedLayersFrom(model_names[i]);
    }
  }
}

"""

ORIGINAL_PROTO_WRITE = """\
void WriteProtoToBinaryFile(const Message& proto, const char* filename) {
  fstream output(filename, ios::out | ios::trunc | ios::binary);
  CHECK(proto.SerializeToOstream(&output));
}
"""
ATOMIC_PROTO_WRITE = """\
void WriteProtoToBinaryFile(const Message& proto, const char* filename) {
  // Written to <filename>.part and renamed (engine/build_caffe.py): a kill or a full disk
  // never leaves a partial snapshot under the final name. A failed write removes the .part
  // and throws, naming the file (pycaffe: RuntimeError; the caffe tool: one "error:" line,
  // exit 2), where Caffe CHECK-aborted.
  const string part = string(filename) + ".part";
  errno = 0;
  bool opened, written;
  {
    fstream output(part.c_str(), ios::out | ios::trunc | ios::binary);
    opened = output.is_open();
    written = opened && proto.SerializeToOstream(&output);
    output.close();
    written = written && !output.fail();
  }
  if (written && std::rename(part.c_str(), filename) == 0) return;
  const string why = errno ? std::strerror(errno) : "write failed";
  if (opened) std::remove(part.c_str());
  throw std::runtime_error("cannot write " + (written ? string(filename) : part) + ": " + why);
}
"""
# The caffe tool: an exception (a snapshot that cannot be written) is one line, exit 2.
CAFFE_MAIN_CATCH_OLD = """\
    } catch (bp::error_already_set) {
      PyErr_Print();
      return 1;
    }
"""
CAFFE_MAIN_CATCH_NEW = CAFFE_MAIN_CATCH_OLD + """\
    catch (const std::exception& e) {
      std::cerr << "error: " << e.what() << std::endl;
      return 2;
    }
"""
# Caffe's CPU Adam makes seven passes over every parameter blob (axpby, mul, axpby, powx,
# add_scalar, div, scale); this is the GPU kernel's single pass (AdamUpdate in
# adam_solver.cu), the same arithmetic, and makes a CPU training step of V2V ~1.5x faster.
ADAM_CPU_OLD = """\
    case Caffe::CPU: {
    // update m <- \\beta_1 m_{t-1} + (1-\\beta_1)g_t
    caffe_cpu_axpby(N, Dtype(1)-beta1,
        net_params[param_id]->cpu_diff(), beta1,
        val_m->mutable_cpu_data());

    // update v <- \\beta_2 m_{t-1} + (1-\\beta_2)g_t^2
    caffe_mul(N,
        net_params[param_id]->cpu_diff(),
        net_params[param_id]->cpu_diff(),
    val_t->mutable_cpu_data());
    caffe_cpu_axpby(N, Dtype(1)-beta2,
        val_t->cpu_data(), beta2,
        val_v->mutable_cpu_data());

    // set update
    caffe_powx(N,
        val_v->cpu_data(), Dtype(0.5),
        val_t->mutable_cpu_data());
    caffe_add_scalar(N, eps_hat, val_t->mutable_cpu_data());
    caffe_div(N,
        val_m->cpu_data(),
        val_t->cpu_data(),
        val_t->mutable_cpu_data());

    caffe_cpu_scale(N, local_rate*correction,
        val_t->cpu_data(),
        net_params[param_id]->mutable_cpu_diff());
    break;
  }
"""
ADAM_CPU_NEW = """\
    case Caffe::CPU: {
    // One pass, as the GPU kernel AdamUpdate (added by engine/build_caffe.py).
    Dtype* g = net_params[param_id]->mutable_cpu_diff();
    Dtype* m = val_m->mutable_cpu_data();
    Dtype* v = val_v->mutable_cpu_data();
    const Dtype rate_hat = local_rate * correction;
    for (int i = 0; i < N; ++i) {
      const Dtype gi = g[i];
      const Dtype mi = m[i] = m[i] * beta1 + gi * (1 - beta1);
      const Dtype vi = v[i] = v[i] * beta2 + gi * gi * (1 - beta2);
      g[i] = rate_hat * (mi / (std::sqrt(vi) + eps_hat));
    }
    (void)val_t;
    break;
  }
"""

# Small fixes to the sdist's own files: (file, old text, new text). Each must apply.
SOURCE_PATCHES = [
    # Xavier/MSRA/positive-unitball fillers use num()/channels(), which CHECK-fail on
    # blobs with more than 4 axes; N-D fan-in/fan-out as in later BVLC Caffe.
    ("include/caffe/filler.hpp", "blob->count() / blob->num()", "blob->count() / blob->shape(0)"),
    ("include/caffe/filler.hpp", "blob->count() / blob->channels()",
     "blob->count() / blob->shape(1)"),
    ("include/caffe/filler.hpp", "for (int i = 0; i < blob->num(); ++i)",
     "for (int i = 0; i < blob->shape(0); ++i)"),
    # pycaffe's _caffe.so looks for libcaffe in ../../build/lib, but this fork's Makefile
    # builds into $(BUILD_DIR) = temp: point the rpath there.
    ("Makefile", "-Wl,-rpath,$(ORIGIN)/../../build/lib", "-Wl,-rpath,$(ORIGIN)/../../$(BUILD_DIR_LINK)/lib"),
    # This fork's `caffe train` dropped BVLC's CopyLayers: -weights was silently ignored.
    ("tools/caffe.cpp", "// Train / Finetune a model.\n", CAFFE_CPP_COPYLAYERS + "// Train / Finetune a model.\n"),
    ("tools/caffe.cpp",
     '    solver->Restore(FLAGS_snapshot.c_str());\n  }\n',
     '    solver->Restore(FLAGS_snapshot.c_str());\n'
     '  } else if (FLAGS_weights.size()) {\n'
     '    CopyLayers(solver.get(), FLAGS_weights);\n  }\n'),
    # Snapshots (.caffemodel, .solverstate) are written to a temporary name and renamed; a
    # failed write is an exception, which the caffe tool prints in one line.
    ("src/caffe/util/io.cpp", "#include <fstream>",
     "#include <cerrno>\n#include <cstdio>\n#include <cstring>\n#include <fstream>\n#include <stdexcept>"),
    ("src/caffe/util/io.cpp", ORIGINAL_PROTO_WRITE, ATOMIC_PROTO_WRITE),
    ("tools/caffe.cpp", CAFFE_MAIN_CATCH_OLD, CAFFE_MAIN_CATCH_NEW),
    ("src/caffe/solvers/adam_solver.cpp", ADAM_CPU_OLD, ADAM_CPU_NEW),
]

GPU_CALLS_CPU = """\
// Layers of this fork written for the CPU only: in a CUDA build their GPU methods run the
// CPU code (added by engine/build_caffe.py; the fork left them undefined).
#define V2V_GPU_CALLS_CPU(classname) \\
template <typename Dtype> \\
void classname<Dtype>::Forward_gpu(const vector<Blob<Dtype>*>& bottom, \\
    const vector<Blob<Dtype>*>& top) { Forward_cpu(bottom, top); } \\
template <typename Dtype> \\
void classname<Dtype>::Backward_gpu(const vector<Blob<Dtype>*>& top, \\
    const vector<bool>& propagate_down, \\
    const vector<Blob<Dtype>*>& bottom) { Backward_cpu(top, propagate_down, bottom); }

"""
PROPOSAL_BACKWARD_GPU = """\
// No gradient, as on the CPU (added by engine/build_caffe.py: the fork instantiates a
// Backward_gpu it never defines).
template <typename Dtype>
void ProposalLayer<Dtype>::Backward_gpu(const vector<Blob<Dtype>*>& top,
    const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {
  NOT_IMPLEMENTED;
}

INSTANTIATE_LAYER_GPU_FUNCS(ProposalLayer);"""


def _attr(name: str) -> str:
    """`prop.X` of a cudaDeviceProp field CUDA 13 removed, read as a device attribute."""
    return f"[&] {{ int v = 0; cudaDeviceGetAttribute(&v, {name}, device); return v; }}()"


# Mends for the CUDA build only (listed in the README's engine table).
CPU_ONLY_LAYERS = {"hardsigmoid": "HardSigmoidLayer", "hardswish": "HardSwishLayer",
                   "maxunpool": "MaxUnPoolLayer", "pixelshuffle": "PixelShuffleLayer",
                   "relu6": "ReLU6Layer", "upsample": "UpsampleLayer"}
CUDA_PATCHES = [
    # CUDA 13 removed cudaDeviceProp.clockRate, .deviceOverlap, .kernelExecTimeoutEnabled.
    ("src/caffe/common.cpp", "<< prop.clockRate;", "<< " + _attr("cudaDevAttrClockRate") + ";"),
    ("src/caffe/common.cpp", "(prop.deviceOverlap ? ", "(prop.asyncEngineCount > 0 ? "),
    ("src/caffe/common.cpp", "(prop.kernelExecTimeoutEnabled ? ",
     "(" + _attr("cudaDevAttrKernelExecTimeout") + " ? "),
    ("src/caffe/layers/proposal_layer.cu", "INSTANTIATE_LAYER_GPU_FUNCS(ProposalLayer);",
     PROPOSAL_BACKWARD_GPU),
    ("include/caffe/util/device_alternate.hpp", "#else  // Normal GPU + CPU Caffe.\n",
     "#else  // Normal GPU + CPU Caffe.\n\n" + GPU_CALLS_CPU),
] + [(f"src/caffe/layers/{f}_layer.cpp", f"STUB_GPU({c});", f"STUB_GPU({c});\n#else\nV2V_GPU_CALLS_CPU({c});")
     for f, c in CPU_ONLY_LAYERS.items()]
CAFFE_BIN = "temp/tools/caffe.bin"  # the fork's Makefile fixes BUILD_DIR = temp


def pristine(sdist: Path, rel: str) -> str:
    with tarfile.open(sdist) as tf:
        return tf.extractfile(f"{SDIST_NAME}-{SDIST_VERSION}/{rel}").read().decode()


def copy_numpy_headers(src: Path, venv: Path) -> bool:
    np_inc = Path(numpy_include(venv)[0])
    changed = False
    for f in np_inc.rglob("*"):
        if f.is_file():
            changed |= write_if_changed(src / "numpy-include" / f.relative_to(np_inc), f.read_bytes())
    return changed


def prepare_tree(src: Path, sdist: Path, config: str, venv: Path, cuda: bool) -> list[str]:
    """Put our files into an unpacked (or copied) source tree, touching only changes."""
    changed = []
    if copy_numpy_headers(src, venv):
        changed.append("numpy headers")
    proto = "src/caffe/proto/caffe.proto"
    if write_if_changed(src / proto, patched_proto(pristine(sdist, proto)).encode()):
        changed.append("caffe.proto")
    texts: dict[str, str] = {}
    for rel, old, new in SOURCE_PATCHES + (CUDA_PATCHES if cuda else []):
        text = texts.setdefault(rel, pristine(sdist, rel))
        if old not in text:
            die(f"patch for {rel} does not apply: {old!r} not found")
        texts[rel] = text.replace(old, new)
    for rel, text in texts.items():
        if write_if_changed(src / rel, text.encode()):
            changed.append(rel)
    for f in sorted(LAYERS.iterdir()):
        if f.suffix in (".hpp", ".h"):
            dst = src / "include/caffe/layers" / f.name
        elif f.suffix in (".cpp", ".cu"):
            dst = src / "src/caffe/layers" / f.name
        else:
            continue
        if write_if_changed(dst, f.read_bytes()):
            changed.append(f.name)
    if write_if_changed(src / "Makefile.config", config.encode()):
        changed.append("Makefile.config")
    log("changed inputs: " + (", ".join(changed) if changed else "none"))
    return changed


def invalidate(src: Path, changed: list[str]) -> None:
    """Delete the objects that `make` would not know to rebuild.

    This Makefile passes every include dir with -isystem, so its -MMD dependency files
    list no headers: a changed header rebuilds nothing by itself.
    """
    objdir = src / ".temp_release"
    ours = [c for c in changed if c.startswith("v2v_")]
    if "numpy headers" in changed:  # only pycaffe includes them
        (src / "python/caffe/_caffe.so").unlink(missing_ok=True)
    if any(c in ("Makefile", "Makefile.config") or c.endswith(".hpp") and not c.startswith("v2v_")
           for c in changed):
        log("build configuration or a shared header changed: full rebuild")
        shutil.rmtree(objdir, ignore_errors=True)
        (src / "python/caffe/_caffe.so").unlink(missing_ok=True)
    elif any(c.endswith(".hpp") for c in ours):
        for obj in objdir.glob("src/caffe/layers/v2v_*"):
            obj.unlink()


def is_cuda_tree(tree: Path) -> bool:
    cfg = tree / "Makefile.config"
    return cfg.exists() and "CPU_ONLY := 1" not in cfg.read_text()


def finished(builds: Path, cuda: bool) -> list[Path]:
    """Finished builds of one flavour (CPU-only or CUDA)."""
    return [p for p in builds.iterdir()
            if (p / ".complete").exists() and is_cuda_tree(p) == cuda]


def newest_build(builds: Path, exclude: str, cuda: bool) -> Path | None:
    done = [p for p in finished(builds, cuda) if p.name != exclude]
    return max(done, key=lambda p: (p / ".complete").stat().st_mtime) if done else None


def run_make(src: Path, jobs: int) -> None:
    logfile = src / "build.log"
    log(f"make -j{jobs} lib tools pycaffe (log: {logfile})")
    t0 = time.time()
    with open(logfile, "w") as lf:
        proc = subprocess.Popen(["make", f"-j{jobs}", "lib", "tools", "pycaffe"], cwd=src,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        n = 0
        for line in proc.stdout:
            lf.write(line)
            if line.startswith(("CXX", "NVCC", "LD", "AR", "PROTOC", "Makefile")):
                n += 1
                if n % 20 == 0:
                    log(f"  {n} steps, {time.time() - t0:.0f} s: {line.strip()[:80]}")
        rc = proc.wait()
    if rc != 0:
        tail = "".join(open(logfile).readlines()[-40:])
        die(f"make failed (exit {rc}); last lines of {logfile}:\n{tail}")
    log(f"make done in {time.time() - t0:.0f} s")


def build(cache: Path, venv: Path, cuda: bool, force: bool) -> Path:
    home = cuda_toolkit.ensure_toolkit(cache, venv_python(venv)) if cuda else None
    config = makefile_config(venv, home)
    key = inputs_key(config, cuda)
    builds = cache / "builds"
    builds.mkdir(parents=True, exist_ok=True)
    final = builds / key
    if (final / ".complete").exists() and not force:
        log(f"cached build {final} is up to date; skipping the build")
        return final
    sdist = fetch_sdist(cache, venv)
    work = builds / (key + ".tmp")
    if final.exists():
        shutil.rmtree(final)
    base = newest_build(builds, key, cuda)
    orphans = sorted((o for o in builds.glob("*.tmp") if is_cuda_tree(o) == cuda),
                     key=lambda p: p.stat().st_mtime)
    if work.exists():
        log(f"resuming interrupted build in {work}")
    elif base is None and orphans:
        log(f"resuming from interrupted build {orphans[-1].name}")
        orphans[-1].rename(work)
    elif base is not None:
        log(f"seeding from previous build {base.name} (incremental make)")
        shutil.copytree(base, work, symlinks=True)
        (work / ".complete").unlink(missing_ok=True)
    else:
        log(f"unpacking {sdist.name}")
        tmp = builds / (key + ".unpack")
        shutil.rmtree(tmp, ignore_errors=True)
        with tarfile.open(sdist) as tf:
            if hasattr(tarfile, "data_filter"):
                tf.extractall(tmp, filter="data")
            else:  # Debian 12's Python 3.11.2 predates extraction filters
                tf.extractall(tmp)
        (tmp / f"{SDIST_NAME}-{SDIST_VERSION}").rename(work)
        tmp.rmdir()
        # Stale generated files shipped in the sdist: regenerated by make/protoc.
        for stale in ["src/caffe/proto/caffe.pb.cc", "src/caffe/proto/caffe.pb.h",
                      "include/caffe/proto/caffe.pb.h", "python/caffe/proto/caffe_pb2.py"]:
            (work / stale).unlink(missing_ok=True)
    invalidate(work, prepare_tree(work, sdist, config, venv, cuda))
    run_make(work, os.cpu_count() or 2)
    check = subprocess.run([str(work / CAFFE_BIN), "--version"],
                           capture_output=True, text=True)
    if check.returncode != 0:
        die(f"built caffe binary does not run: {check.stderr.strip()}")
    (work / ".complete").write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"))
    work.rename(final)
    prune(builds, keep=final, cuda=cuda)
    log(f"engine built: {final}")
    return final


def prune(builds: Path, keep: Path, cuda: bool) -> None:
    """Keep the newest KEEP_BUILDS builds of this flavour (the other flavour's are kept)."""
    done = sorted(finished(builds, cuda), key=lambda p: (p / ".complete").stat().st_mtime,
                  reverse=True)
    for old in done[KEEP_BUILDS:]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)


def install(build_dir: Path, venv: Path) -> None:
    """Make pycaffe importable from the venv and install the `caffe` wrapper."""
    site = subprocess.run([str(venv_python(venv)), "-c",
                           "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    write_if_changed(Path(site) / "v2v_caffe.pth", f"{build_dir / 'python'}\n".encode())
    write_if_changed(venv / "v2v-engine", f"{build_dir}\n".encode())
    text = (WRAPPER.read_text().replace("@CAFFE_BIN@", str(build_dir / CAFFE_BIN))
            .replace("@REPO@", str(REPO)))
    dst = venv / "bin" / "caffe"
    if write_if_changed(dst, text.encode()):
        dst.chmod(0o755)
    log(f"installed pycaffe and {dst}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--venv", type=Path, default=REPO / ".venv")
    ap.add_argument("--cache", type=Path,
                    default=Path(os.environ.get("V2V_ENGINE_CACHE",
                                                Path.home() / ".cache" / "v2v-engine")))
    ap.add_argument("--cuda", action="store_true", help="build the CUDA code too")
    ap.add_argument("--force", action="store_true", help="rebuild even if cached")
    ap.add_argument("--print-dir", action="store_true",
                    help="print the build folder these inputs map to and exit")
    args = ap.parse_args()
    venv = args.venv.resolve()
    if not venv_python(venv).exists():
        die(f"{venv} has no bin/python; run engine/setup.sh first")
    if args.print_dir:
        home = cuda_toolkit.cuda_home(args.cache) if args.cuda else None
        print(args.cache / "builds" / inputs_key(makefile_config(venv, home), args.cuda))
        return
    install(build(args.cache.resolve(), venv, args.cuda, args.force), venv)


if __name__ == "__main__":
    main()
