"""Clip databases: LMDB + manifest.json, written resumably, read by one small function.

Layout of a database directory (default ``data/db/<dataset>/<split>``, models.paths):

    data.mdb, lock.mdb   LMDB environment
    manifest.json        written when the build finishes (absent = unfinished build)

LMDB keys (ASCII):

    r/<unit:07d>/<clip:05d>   one clip record (value: the fields' raw bytes, concatenated)
    i/<unit:07d>/<clip:05d>   JSON {"item": source video/sequence, "start": first frame (0-based)}
    u/<unit:07d>              JSON {"item": ..., "clips": n}: this work unit (a video) is complete
    b/<unit:07d>              JSON {"item": ..., "error": message}: this unit failed (reported)

``unit`` is the index of the source video in the tool's sorted input list, so the keys do
not depend on which process or shard produced them: resumed, multi-process and merged
sharded builds hold byte-identical records. A unit's records, info and done marker are
written in one transaction, so a kill never leaves half a video.

A record's value is the concatenation, in manifest ``fields`` order, of each field's
C-contiguous bytes with the manifest's shape and dtype. Fields by task:

    seg    frames (3, L, H, W) uint8 RGB;  label (1, L, H, W) uint8 class id, 255 = void
    flow   frames (3, L, H, W) uint8 RGB;  flow (2, L, H, W) float16 (u, v) px, frame t → t+1
    color  frames (3, L, H, W) uint8 RGB   (the gray input is computed by the data layer)
    sintel frames (3, L, H, W) uint8 RGB;  flow (2, L, H, W) float32 (ground truth)

manifest.json: format, dataset, split, task, fields {name: {shape, dtype}}, count,
records [{key, item, start, sha256}], checksum (sha256 over the records' sha256s in key
order: equal checksums = identical databases), bad [{item, error}], command (argv) and
params (the tool's parameters), teacher parameters where flow was computed, and, in a
database with a ``label`` field, label_values (the sorted values present in it, so a
net's class count is checked against them without reading the records).

A failed write (a full or read-only disk; LMDB reports it as its own error) is an OSError
naming the file (models.cli.writing), which the tools print as one line.

``read_clip(db, i)`` returns record i (manifest order) as a dict of arrays.
``python -m data_prep.db merge OUT SHARD...`` merges shards; ``python -m data_prep.db info DB``
prints a manifest summary; ``python -m data_prep.db verify DB`` re-checks every checksum.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import os
import struct
import sys
import traceback
from functools import lru_cache
from pathlib import Path

import lmdb
import numpy as np

from models.lock import hold
from models.paths import user_path
from models import cli

FORMAT = "v2v-clipdb-1"
LABEL, LABEL_VALUES = "label", "label_values"   # the label field; the manifest key listing its values
MAP_SIZE = int(os.environ.get("V2V_LMDB_MAP_SIZE", 1 << 40))  # 1 TiB of address space (sparse)


class DBError(ValueError):
    """A missing, unfinished or malformed database; the message names its path."""


def _ukey(unit: int) -> str:
    return f"{unit:07d}"


def _layout(fields: list[tuple[str, tuple, np.dtype]]) -> tuple[dict, int]:
    """{name: (shape, dtype, byte offset)} of the fields in a record, and the record's size."""
    out, off = {}, 0
    for name, shape, dt in fields:
        out[name] = (shape, dt, off)
        off += int(np.prod(shape)) * dt.itemsize
    return out, off


def _field(value: bytes, shape, dt, off) -> np.ndarray:
    return np.frombuffer(value, dt, int(np.prod(shape)), off).reshape(shape)


def _values(a: np.ndarray) -> set:
    """The distinct values of an array (uint8 labels: by counting, about as fast as hashing them)."""
    if a.dtype == np.uint8:
        return set(np.flatnonzero(np.bincount(a.reshape(-1), minlength=256)).tolist())
    return set(np.unique(a).tolist())


_READERS: dict[str, lmdb.Environment] = {}
_READERS_LOCK = __import__("threading").Lock()


def check_data_file(path: Path) -> None:
    """data.mdb must be as long as its newest LMDB meta page says: reading a truncated file
    through LMDB's memory map ends in SIGBUS, not in an error."""
    f = Path(path) / "data.mdb"
    try:
        size = f.stat().st_size
        with open(f, "rb") as fh:
            head = fh.read(2 * 65536)
    except OSError as e:
        raise DBError(f"database {path}: data.mdb unreadable ({e.strerror})") from None
    magic = 0xBEEFC0DE  # an LMDB meta page: header 16 bytes, magic, ..., last page @136, txn id @144
    if len(head) < 152 or struct.unpack_from("<I", head, 16)[0] != magic:
        raise DBError(f"database {path}: data.mdb is not an LMDB file (damaged or replaced)")
    page = struct.unpack_from("<I", head, 40)[0]   # the page size, kept in the free DB's md_pad
    metas = [struct.unpack_from("<QQ", head, 136)]
    if len(head) >= page + 152 and struct.unpack_from("<I", head, page + 16)[0] == magic:
        metas.append(struct.unpack_from("<QQ", head, page + 136))
    last_page = max(metas, key=lambda m: m[1])[0]
    need = (last_page + 1) * page
    if size < need:
        raise DBError(f"database {path}: data.mdb is truncated ({size} bytes, its index needs {need}); "
                      f"remove the folder and build it again ({_build_hint(Path(path))})")


def _open_env(path: Path, readonly: bool):
    """LMDB allows one environment per file per process: read-only ones are shared (and
    thread-safe); opening a writer closes this process's reader of the same database."""
    key = str(Path(path).resolve())
    with _READERS_LOCK:
        if readonly:
            env = _READERS.get(key)
            if env is None:
                check_data_file(Path(key))
                env = _READERS[key] = lmdb.open(key, readonly=True, lock=False, readahead=False,
                                                max_readers=256, subdir=True)
            return env
        old = _READERS.pop(key, None)
        if old is not None:
            old.close()
            _cached.cache_clear()
    path.mkdir(parents=True, exist_ok=True)
    if (path / "data.mdb").exists():
        check_data_file(path)
    return lmdb.open(str(path), map_size=MAP_SIZE, subdir=True, sync=True, metasync=True)


# ------------------------------------------------------------------------------- writing
class ClipWriter:
    """Resumable writer. ``fields``: {name: (shape, dtype)} (every record the same)."""

    def __init__(self, path, fields: dict):
        self.path = Path(path)
        self.fields = {k: (tuple(int(x) for x in s), np.dtype(d).str) for k, (s, d) in fields.items()}
        try:
            self.lock = hold(self.path, "database")
        except ValueError as e:
            raise DBError(str(e)) from None
        self.env = _open_env(self.path, readonly=False)

    @contextlib.contextmanager
    def _write(self):
        """A write transaction. LMDB's errors (a full disk is EIO or ENOSPC there) become an
        OSError naming data.mdb."""
        with cli.writing(self.path / "data.mdb"):
            try:
                with self.env.begin(write=True) as txn:
                    yield txn
            except lmdb.Error as e:
                code = errno.ENOSPC if isinstance(e, lmdb.DiskError) else errno.EIO
                raise OSError(code, f"{e} (a full or read-only disk?)") from None

    def start(self):
        """Mark the database unfinished (finalize writes the manifest again)."""
        man = self.path / "manifest.json"
        if man.exists():
            man.unlink()

    def check_params(self, ident: dict):
        """Record what this database is built with (fields, parameters) on first use; refuse
        to resume or extend it with anything else, naming both."""
        self.claim(json.dumps({"fields": {k: [list(s), d] for k, (s, d) in self.fields.items()}, **ident},
                              sort_keys=True, default=str))

    def claim(self, want: str):
        """Store the build identity ``want`` (JSON) or check it against the stored one."""
        with self._write() as txn:
            have = txn.get(b"m/build")
            if have is None:
                txn.put(b"m/build", want.encode())
                return
        if have.decode() != want:
            raise DBError(f"database {self.path} was started with other parameters:\n  there: "
                          f"{have.decode()}\n  now:   {want}\nremove it (or give another --out) "
                          f"to build it anew")

    def done_units(self) -> set[int]:
        """Units stored completely. Failed (bad) units are not done: a new run retries them
        (the input may have been repaired) and reports them again if they still fail."""
        out = set()
        with self.env.begin() as txn:
            for prefix in (b"u/",):
                cur = txn.cursor()
                if cur.set_range(prefix):
                    for k in cur.iternext(values=False):
                        if not k.startswith(prefix):
                            break
                        out.add(int(k[2:]))
        return out

    def encode(self, arrays: dict) -> bytes:
        parts = []
        for name, (shape, dtype) in self.fields.items():
            a = np.ascontiguousarray(arrays[name], dtype=np.dtype(dtype))
            if a.shape != shape:
                raise ValueError(f"field {name}: shape {a.shape}, the database holds {shape}")
            parts.append(a.tobytes())
        return b"".join(parts)

    def put_unit(self, unit: int, item: str, clips: list[tuple[int, dict]]):
        """All clips of one unit (a video) in one transaction: [(start, {field: array})]."""
        with self._write() as txn:
            for c, (start, arrays) in enumerate(clips):
                k = f"{_ukey(unit)}/{c:05d}"
                txn.put(f"r/{k}".encode(), self.encode(arrays))
                txn.put(f"i/{k}".encode(), json.dumps({"item": item, "start": int(start)}).encode())
            txn.delete(f"b/{_ukey(unit)}".encode())
            txn.put(f"u/{_ukey(unit)}".encode(), json.dumps({"item": item, "clips": len(clips)}).encode())

    def put_bad(self, unit: int, item: str, error: str):
        with self._write() as txn:
            txn.put(f"b/{_ukey(unit)}".encode(), json.dumps({"item": item, "error": error}).encode())

    def copy_from(self, other: Path):
        """Copy every record/marker of another (shard) database into this one."""
        src = _open_env(Path(other), readonly=True)
        with src.begin() as s, self._write() as d:
            for k, v in s.cursor():
                if k[:2] in (b"r/", b"i/", b"u/", b"b/", b"m/"):
                    d.put(k, v)

    def finalize(self, meta: dict) -> dict:
        """Write manifest.json from the database's content (key order)."""
        records, bad, values = [], [], set()
        layout, _ = _layout([(k, s, np.dtype(d)) for k, (s, d) in self.fields.items()])
        h = hashlib.sha256()
        with self.env.begin() as txn:
            cur = txn.cursor()
            if cur.set_range(b"b/"):
                for k, v in cur:
                    if not k.startswith(b"b/"):
                        break
                    bad.append(json.loads(v))
            cur = txn.cursor()
            if cur.set_range(b"r/"):
                for k, v in cur:
                    if not k.startswith(b"r/"):
                        break
                    key = k[2:].decode()
                    info = json.loads(txn.get(b"i/" + k[2:]))
                    digest = hashlib.sha256(v).hexdigest()
                    h.update(digest.encode())
                    if LABEL in layout:
                        values |= _values(_field(v, *layout[LABEL]))
                    records.append({"key": key, "item": info["item"], "start": info["start"],
                                    "sha256": digest})
        man = {"format": FORMAT, **meta,
               "fields": {k: {"shape": list(s), "dtype": np.dtype(d).name} for k, (s, d) in self.fields.items()},
               "count": len(records), "checksum": h.hexdigest(), "bad": bad,
               **({LABEL_VALUES: sorted(values)} if LABEL in layout else {}), "records": records}
        tmp = self.path / "manifest.json.part"
        with cli.writing(tmp):
            tmp.write_text(json.dumps(man, indent=1))
        os.replace(tmp, self.path / "manifest.json")
        return man

    def close(self):
        self.env.close()
        self.lock.close()


def progress(path) -> int:
    """Number of finished units (done or bad) in a database being built (0 if none)."""
    path = Path(path)
    if not (path / "data.mdb").exists():
        return 0
    env = lmdb.open(str(path), readonly=True, lock=True, subdir=True)
    try:
        n = 0
        with env.begin() as txn:
            for k in txn.cursor().iternext(values=False):
                n += k[:2] in (b"u/", b"b/")
        return n
    finally:
        env.close()


# ------------------------------------------------------------------------------- building
def parse_shard(s: str | None) -> tuple[int, int]:
    if not s:
        return 0, 1
    try:
        k, n = (int(x) for x in s.split("/"))
    except ValueError:
        raise SystemExit(f"error: --shard wants k/N (e.g. 0/8), got {s!r}") from None
    if not (n >= 1 and 0 <= k < n):
        raise SystemExit(f"error: --shard {s}: need 0 <= k < N")
    return k, n


def shard_path(out: Path, k: int, n: int) -> Path:
    return Path(f"{out}.shard-{k}-of-{n}")


def _call(args):
    fn, unit, item, payload = args
    try:
        return unit, item, fn(item, payload), None
    except Exception as e:  # noqa: BLE001 - a bad item is reported, the rest goes on
        msg = str(e) or type(e).__name__
        if os.environ.get("V2V_DEBUG"):
            msg += "\n" + traceback.format_exc()
        return unit, item, None, msg


def build(out, units: list[tuple[str, object]], work, fields: dict, meta: dict,
          workers: int = 1, shard: str | None = None, desc: str = "clips") -> dict | None:
    """Run ``work(item, payload) -> [(start, {field: array})]`` over every unit (in several
    processes), store the results resumably in ``out`` and write its manifest.

    ``units`` is the sorted list of (item name, payload); a unit's index in it is its key.
    A failing unit is reported with its error and listed at the end; the others go on.
    With ``shard="k/N"`` only units with index % N == k run, into ``<out>.shard-k-of-N``
    (merge with ``python -m data_prep.db merge``). Returns the manifest (a shard's covers
    only its own units)."""
    from tqdm import tqdm
    k, n = parse_shard(shard)
    out = Path(out)
    path = shard_path(out, k, n) if n > 1 else out
    w = None
    try:
        w = ClipWriter(path, fields)   # a damaged data.mdb already there is a DBError too
        w.check_params({"params": meta.get("params"), "teacher": meta.get("teacher"),
                        "units": [u for u, _ in units]})
    except DBError as e:
        if w is not None:
            w.close()
        raise SystemExit(f"error: {e}") from None
    w.start()
    done = w.done_units()
    todo = [(work, i, item, payload) for i, (item, payload) in enumerate(units)
            if i % n == k and i not in done]
    mine = sum(1 for i in range(len(units)) if i % n == k)
    if done:
        print(f"[{desc}] resuming {path}: {mine - len(todo)} of {mine} items already done"
              + (", failed ones are retried" if len(todo) else ""))
    errors = []
    pool = None
    if workers > 1 and len(todo) > 1:  # fork the workers before tqdm starts its monitor thread
        import multiprocessing as mp
        ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        pool = ctx.Pool(min(workers, len(todo)))
    bar = tqdm(total=mine, initial=mine - len(todo), desc=desc, unit="item", file=sys.stderr,
               dynamic_ncols=True)
    try:
        results = pool.imap_unordered(_call, todo) if pool else map(_call, todo)
        for res in results:
            _store(w, res, errors, bar)
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    man = w.finalize({**meta, "shard": f"{k}/{n}" if n > 1 else None})
    w.close()
    if man["bad"]:
        print(f"\n[{desc}] {len(man['bad'])} bad item(s) skipped:", file=sys.stderr)
        for b in man["bad"]:
            print(f"  {b['item']}: {b['error']}", file=sys.stderr)
    print(f"[{desc}] {path}: {man['count']} clips from {mine - len(man['bad'])} items, "
          f"checksum {man['checksum'][:16]}")
    if n > 1:
        print(f"[{desc}] shard {k}/{n} done; when all shards are: "
              f"python -m data_prep.db merge {out} {out}.shard-*-of-{n}")
    return man


def _store(w: ClipWriter, res, errors, bar):
    unit, item, clips, err = res
    if err is not None:
        bar.write(f"error: {item}: {err}", file=sys.stderr)
        w.put_bad(unit, item, err)
        errors.append((item, err))
    else:
        w.put_unit(unit, item, clips)
    bar.update(1)


def merge(out, shards: list, meta_extra: dict | None = None) -> dict:
    """Merge shard databases into ``out``; the result equals an unsharded build."""
    shards = [Path(s) for s in shards]
    if not shards:
        raise DBError("merge: no shard databases given")
    if any(Path(out).resolve() == s.resolve() for s in shards):
        raise DBError(f"merge: the target {out} is also one of the shards")
    mans = []
    for s in shards:
        m = s / "manifest.json"
        if not m.exists():
            raise DBError(f"shard {s} is not finished (no manifest.json): run its build again")
        mans.append(json.loads(m.read_text()))
    n = {m.get("shard", "0/1").split("/")[1] for m in mans}
    first = mans[0]
    for s, m in zip(shards, mans):
        if m["fields"] != first["fields"] or m.get("params") != first.get("params"):
            raise DBError(f"shard {s} was built with other fields/parameters than {shards[0]}")
    got = sorted(int(m.get("shard", "0/1").split("/")[0]) for m in mans)
    if len(n) != 1 or got != list(range(int(n.pop()))):
        print(f"warning: shards {got} of {first['shard']} given; the merged database is partial",
              file=sys.stderr)
    fields = {k: (v["shape"], v["dtype"]) for k, v in first["fields"].items()}
    w = ClipWriter(out, fields)
    try:
        w.claim(build_identity(shards[0]))
    except DBError:
        w.close()
        raise
    w.start()
    for s in shards:
        w.copy_from(s)
    meta = {k: v for k, v in first.items() if k not in ("format", "fields", "count", "checksum",
                                                          "bad", "records", "shard")}
    meta.update(meta_extra or {})
    man = w.finalize({**meta, "shard": None, "merged_from": [str(s) for s in shards]})
    w.close()
    print(f"merged {len(shards)} shard(s) into {out}: {man['count']} clips, checksum {man['checksum'][:16]}")
    return man


def build_identity(db: Path) -> str:
    """What a database was built with (fields, parameters, item list), as its builder stored it."""
    with _open_env(Path(db), readonly=True).begin() as txn:
        v = txn.get(b"m/build")
    if v is None:
        raise DBError(f"database {db} holds no build parameters (m/build): not built by data_prep")
    return v.decode()


# ------------------------------------------------------------------------------- reading
def manifest(db) -> dict:
    """The manifest of a finished database; DBError naming the path otherwise."""
    db = Path(db)
    m = db / "manifest.json"
    hint = _build_hint(db)
    if not db.exists():
        raise DBError(f"database {db} not found: build it with {hint}")
    if not m.exists():
        raise DBError(f"database {db} is unfinished (no manifest.json): run its build again "
                      f"to resume ({hint})")
    try:
        man = json.loads(m.read_text())
    except (OSError, ValueError) as e:
        raise DBError(f"database {db}: manifest.json unreadable ({e})") from None
    if man.get("format") != FORMAT or "fields" not in man or "records" not in man:
        raise DBError(f"database {db}: manifest.json is not a {FORMAT} manifest")
    if man["count"] == 0 or not man["records"]:
        raise DBError(f"database {db} holds no clips (bad items: {len(man.get('bad', []))})")
    if man["count"] != len(man["records"]):
        raise DBError(f"database {db}: manifest.json says {man['count']} clips but lists "
                      f"{len(man['records'])}: damaged; rebuild it ({hint})")
    return man


def _build_hint(db: Path) -> str:
    parts = db.parts
    ds = parts[-2] if len(parts) >= 2 else ""
    split = parts[-1]
    return {
        "gatech": f"python -m data_prep.gatech --root <GATECH folder> --split {split}",
        "ucf101_flow": f"python -m data_prep.ucf101 --task flow --root <UCF-101 folder> "
                       f"--splits <ucfTrainTestlist folder> --split {split}",
        "ucf101_color": f"python -m data_prep.ucf101 --task color --root <UCF-101 folder> "
                        f"--splits <ucfTrainTestlist folder> --split {split}",
        "sintel": "python -m data_prep.sintel --root <MPI-Sintel folder>",
    }.get(ds, "the data_prep tool of its dataset (see data_prep/README.md)")


class ClipDB:
    """Read-only access to a finished database: ``len(db)``, ``db[i]`` → {field: array}."""

    def __init__(self, path):
        self.path = Path(path)
        self.manifest = manifest(self.path)
        self.fields = [(k, tuple(v["shape"]), np.dtype(v["dtype"])) for k, v in self.manifest["fields"].items()]
        self.layout, self.size = _layout(self.fields)
        self.keys = [r["key"].encode() for r in self.manifest["records"]]
        self._env = None

    def __len__(self):
        return len(self.keys)

    @property
    def env(self):
        if self._env is None:
            self._env = _open_env(self.path, readonly=True)
        return self._env

    def raw(self, i: int) -> bytes:
        with self.env.begin(buffers=False) as txn:
            v = txn.get(b"r/" + self.keys[i])
        if v is None:
            raise DBError(f"database {self.path}: record {self.keys[i].decode()} missing "
                          f"(the manifest does not match data.mdb)")
        return v

    def __getitem__(self, i: int) -> dict:
        v = self.raw(i)
        if hashlib.sha256(v).hexdigest() != self.manifest["records"][i]["sha256"]:
            raise DBError(f"database {self.path}: record {self.keys[i].decode()} is damaged (its sha256 "
                          f"differs from the manifest's); rebuild it ({_build_hint(self.path)})")
        if len(v) != self.size:
            raise DBError(f"database {self.path}: record {self.keys[i].decode()} has {len(v)} "
                          f"bytes, the manifest's fields need {self.size}")
        return {name: _field(v, *where) for name, where in self.layout.items()}

    def info(self, i: int) -> dict:
        return self.manifest["records"][i]

    def label_values(self) -> list:
        """The values present in the label field, from the manifest (finalize records them).
        A database finalized before label_values existed is scanned here, with a note and
        a progress bar (its build command run again records them: every unit is done, so
        it only rewrites manifest.json)."""
        if LABEL_VALUES in self.manifest:
            return self.manifest[LABEL_VALUES]
        if LABEL not in self.layout:
            raise DBError(f"database {self.path} has no {LABEL} field")
        from tqdm import tqdm
        cmd = " ".join(self.manifest.get("command") or []) or _build_hint(self.path)
        print(f"note: {self.path}: its manifest.json predates label_values, so its labels are read "
              f"now; to record them, run its build command again: {cmd}", file=sys.stderr)
        values = set()
        for i in tqdm(range(len(self)), desc="labels", unit="clip", file=sys.stderr, disable=None):
            values |= _values(self[i][LABEL])
        self.manifest[LABEL_VALUES] = sorted(values)   # read once per ClipDB
        return self.manifest[LABEL_VALUES]

    def verify(self) -> list[str]:
        """Keys whose bytes do not match the manifest's sha256."""
        return [r["key"] for i, r in enumerate(self.manifest["records"])
                if hashlib.sha256(self.raw(i)).hexdigest() != r["sha256"]]

    def close(self):
        self._env = None  # the environment is shared within the process (see _open_env)


@lru_cache(maxsize=8)
def _cached(path: str) -> ClipDB:
    return ClipDB(path)


def read_clip(db, i: int) -> dict:
    """Record ``i`` of database ``db`` (a path; relative paths resolve against the current
    directory) as {field: read-only array} (see the module docstring for the fields)."""
    return _cached(str(Path(db).resolve()))[i]


def _shard_paths(args: list[str]) -> list[Path]:
    """Shard folders as given (data/... from any directory); a pattern the shell left
    unexpanded (its folder is elsewhere, e.g. under $V2V_DATA) is expanded here."""
    out = []
    for s in args:
        p = user_path(s)
        out += sorted(p.parent.glob(p.name)) if any(c in p.name for c in "*?[") else [p]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m data_prep.db",
        description="Clip database utilities (layout: see data_prep/README.md).",
        epilog="examples:\n  python -m data_prep.db info data/db/gatech/train\n"
               "  python -m data_prep.db verify data/db/ucf101_flow/train\n"
               "  python -m data_prep.db merge data/db/ucf101_flow/train "
               "data/db/ucf101_flow/train.shard-*-of-8",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("info", help="summary of a database's manifest")
    p.add_argument("db")
    p = sub.add_parser("verify", help="re-check every record's sha256 against the manifest")
    p.add_argument("db")
    p = sub.add_parser("merge", help="merge finished shards (built with --shard k/N) into OUT")
    p.add_argument("out")
    p.add_argument("shards", nargs="+")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "merge":
            merge(user_path(a.out), _shard_paths(a.shards))
        elif a.cmd == "info":
            a.db = user_path(a.db)
            m = manifest(a.db)
            print(f"{a.db}: {m.get('dataset')} {m.get('split')} task {m.get('task')}, {m['count']} clips, "
                  f"checksum {m['checksum'][:16]}, {len(m['bad'])} bad item(s)")
            for k, v in m["fields"].items():
                print(f"  {k}: {tuple(v['shape'])} {v['dtype']}")
            if LABEL_VALUES in m:
                print(f"  label values: {', '.join(map(str, m[LABEL_VALUES]))}")
            print(f"  made by: {' '.join(m.get('command', []))}")
        else:
            a.db = user_path(a.db)
            db = ClipDB(a.db)
            bad = db.verify()
            print(f"{a.db}: {len(db) - len(bad)}/{len(db)} records match their checksums")
            return 1 if bad else 0
    except DBError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    cli.run(main)
