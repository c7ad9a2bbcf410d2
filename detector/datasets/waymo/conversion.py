"""Waymo segments (v1 TFRecord or v2 Parquet) -> converted data (per-frame .npy points, .npz
index, GT database).

Two frame sources (:class:`V1Source`: one TFRecord; :class:`V2Source`: one segment of a v2 split)
feed one converted-segment writer (:func:`convert_segment`), so the same frames give the same
bytes from either. The output format is specified in ``detector/datasets/converted.py`` and
docs/data_formats.md; the CLI is ``tools/convert_waymo.py`` (parallel per segment, resumable,
atomic). Worker processes die with the converter (``PR_SET_PDEATHSIG`` and a watchdog).

Atomicity and resume: a segment is written into ``ROOT/<split>/.tmp/<segment>.<random>/``,
checksummed, renamed to ``ROOT/<split>/segments/<segment>/`` and only then given its manifest
entry ``ROOT/<split>/manifest/<segment>.json`` (temp file + ``os.replace``). A rerun trusts a
segment only if its manifest entry exists, its directory exists and the entry's options and
source (size, mtime) match; anything else - a stale temp dir after Ctrl-C / kill -9, a renamed
directory without an entry - is deleted and converted again. Each segment's temp files are named
by segment, so shards (``--shard i/n``) on different machines never touch each other's files.

Corrupt input: records that fail a CRC check or do not decode are reported (file, record index,
byte offset), counted, kept in the manifest entry, and the rest of the segment is converted; the
summary's ``ok`` is False whenever anything was skipped or a segment failed.
"""
from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import shutil
import time
import uuid
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ops.boxes import points_in_boxes_indices

from ...conventions import LIDAR_NAMES, POINT_COLUMNS
from ..converted import (FORMAT_VERSION, completed_segments, make_frame_id, save_npz, split_dir,
                         write_root_manifest)
from .frame import FrameDecodeError, _lidar_ids, decode_frame
from .parquet import (count_v2_frames, is_v2_split, iter_v2_frames, list_v2_segments,
                      v2_segment_files)
from .tfrecord import read_tfrecord

__all__ = ["convert", "ConversionSummary", "SegmentResult", "convert_segment", "list_inputs",
           "shard_segments", "V1Source", "V2Source", "FORMATS"]

FORMATS = ("v1", "v2")


# ---------------------------------------------------------------------------------------------
# ---------------------------------------------------------------------------------------------
@dataclass
class SegmentResult:
    segment: str
    source: str
    status: str                 # "converted" | "resumed" | "failed"
    frames: int = 0
    points: int = 0
    gt_objects: int = 0
    seconds: float = 0.0
    corrupt: list[dict] = field(default_factory=list)   # {file, index, offset, reason}
    error: str = ""


@dataclass
class ConversionSummary:
    out_root: str
    split: str
    segments: list[SegmentResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def frames(self) -> int:
        return sum(s.frames for s in self.segments)

    @property
    def frames_converted(self) -> int:
        return sum(s.frames for s in self.segments if s.status == "converted")

    @property
    def num_corrupt(self) -> int:
        return sum(len(s.corrupt) for s in self.segments)

    @property
    def num_failed(self) -> int:
        return sum(s.status == "failed" for s in self.segments)

    @property
    def num_resumed(self) -> int:
        return sum(s.status == "resumed" for s in self.segments)

    @property
    def ok(self) -> bool:
        return self.num_corrupt == 0 and self.num_failed == 0

    @property
    def frames_per_s(self) -> float:
        return self.frames_converted / self.seconds if self.seconds > 0 else 0.0

    def table(self) -> str:
        rows = [("segment", "status", "frames", "points", "gt_objs", "corrupt", "s")]
        for s in self.segments:
            rows.append((s.segment, s.status, str(s.frames), str(s.points), str(s.gt_objects),
                         str(len(s.corrupt)), f"{s.seconds:.1f}"))
        rows.append(("TOTAL", f"{len(self.segments)} seg", str(self.frames),
                     str(sum(s.points for s in self.segments)),
                     str(sum(s.gt_objects for s in self.segments)), str(self.num_corrupt),
                     f"{self.seconds:.1f}"))
        w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w[i]) if i < 2 else c.rjust(w[i]) for i, c in enumerate(r))
                 for r in rows]
        lines.insert(1, "-" * len(lines[0]))
        lines.insert(len(lines) - 1, "-" * len(lines[0]))
        out = "\n".join(lines)
        out += (f"\n{self.frames_converted} frames converted in {self.seconds:.1f} s "
                f"({self.frames_per_s:.2f} frames/s); {self.num_resumed} segment(s) already done")
        for s in self.segments:
            for c in s.corrupt:
                out += (f"\nSKIPPED {c['file']}: record {c['index']} at byte offset "
                        f"{c['offset']}: {c['reason']}")
            if s.error:
                out += f"\nFAILED {s.source}: {s.error}"
        if not self.ok:
            out += (f"\n{self.num_corrupt} corrupt record(s) skipped, {self.num_failed} "
                    "segment(s) failed")
        return out


# ---------------------------------------------------------------------------------------------
# Frame sources: where a segment's DecodedFrames come from. The writer (convert_segment) is one.
def _stat(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


class V1Source:
    """One v1 segment TFRecord: frames in record order, frame index = record index; corrupt
    records are skipped and reported in ``corrupt`` (file, index, offset, reason)."""
    format = "v1"

    def __init__(self, path):
        self.path = Path(path)
        self.name = segment_name(self.path)
        self.corrupt: list[dict] = []

    def __str__(self) -> str:
        return str(self.path)

    def source_info(self) -> dict:
        return _stat(self.path)

    def count_frames(self, interval: int = 1) -> int:
        """Records in the file (length headers only; corrupt tails may make this an estimate)."""
        n, pos = 0, 0
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb") as f:
                while pos + 12 <= size:
                    f.seek(pos)
                    ln = int.from_bytes(f.read(8), "little")
                    pos += 16 + ln
                    if pos > size:
                        break
                    n += 1
        except OSError:
            return 0
        return -(-n // interval)

    def frames(self, returns, lidars, interval: int):
        reader = read_tfrecord(self.path, skip_corrupt=True)
        for payload in reader:
            fi = reader.last_index
            if fi % interval:
                continue
            try:
                yield fi, decode_frame(payload, returns=returns, lidars=lidars)
            except FrameDecodeError as e:
                self.corrupt.append(dict(file=str(self.path), index=fi,
                                         offset=reader.last_offset,
                                         reason=f"frame does not decode: {e}"))
        for sk in reader.skipped:
            self.corrupt.append(dict(file=sk.path, index=sk.index, offset=sk.offset,
                                     reason=sk.reason))


class V2Source:
    """One v2 segment (``<split_dir>/<component>/<context_name>.parquet``): frames in time order,
    frame index = position in time order. Any bad input fails the whole segment
    (:class:`parquet.V2FormatError`, naming file, column and frame)."""
    format = "v2"

    def __init__(self, split_dir, context_name: str):
        self.split_dir = Path(split_dir)
        self.name = context_name
        self.corrupt: list[dict] = []

    def __str__(self) -> str:
        return f"{self.split_dir}/*/{self.name}.parquet"

    def source_info(self) -> dict:
        files = v2_segment_files(self.split_dir, self.name)
        return {"path": str(self.split_dir.resolve()), "context_name": self.name,
                "files": {c: (_stat(p) if p.is_file() else None) for c, p in files.items()}}

    def count_frames(self, interval: int = 1) -> int:
        return -(-count_v2_frames(self.split_dir, self.name) // interval)

    def frames(self, returns, lidars, interval: int):
        pos_of = []

        def keep(i):
            if i % interval:
                return False
            pos_of.append(i)
            return True
        for d in iter_v2_frames(self.split_dir, self.name, returns=returns, lidars=lidars,
                                keep=keep):
            yield pos_of[-1], d


def _detect(path: Path) -> str | None:
    if path.is_file():
        if path.name.endswith(".parquet"):
            return "v2"
        return "v1"
    if is_v2_split(path):
        return "v2"
    if any(q.is_file() and q.name.endswith(".tfrecord") for q in path.iterdir()):
        return "v1"
    return None


def list_inputs(inputs: Iterable, format: str | None = None) -> list:
    """The segments to convert, sorted by name, as frame sources.

    v1: .tfrecord files given directly or found (non-recursively) in folders. v2: split folders
    laid out as the release (``<dir>/lidar/<context>.parquet`` ...), or one component file of a
    segment (``<dir>/<component>/<context>.parquet``). ``format`` None detects it from the
    layout; mixing v1 and v2 inputs, an empty folder or a missing path is an error.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if format not in (None, *FORMATS):
        raise ValueError(f"format must be one of {FORMATS} or None, got {format!r}")
    sources: list = []
    formats = set()
    for inp in inputs:
        p = Path(inp)
        if not p.exists():
            raise FileNotFoundError(f"input {p} does not exist")
        fmt = _detect(p)
        if fmt is None:
            raise ValueError(f"input folder {p} is empty: no .tfrecord files (v1) and no "
                             "lidar/*.parquet (v2 split)")
        if format is not None and fmt != format:
            raise ValueError(f"input {p} looks like Waymo {fmt} ({'a Parquet split' if fmt == 'v2' else '.tfrecord files'}), "
                             f"but --format {format} was given")
        formats.add(fmt)
        if fmt == "v2":
            if p.is_file():
                sources.append(V2Source(p.parent.parent, p.name[:-len(".parquet")]))
            else:
                sources.extend(V2Source(p, c) for c in list_v2_segments(p))
        elif p.is_dir():
            sources.extend(V1Source(q) for q in sorted(p.iterdir())
                           if q.is_file() and q.name.endswith(".tfrecord"))
        else:
            sources.append(V1Source(p))
    if len(formats) > 1:
        raise ValueError("inputs mix Waymo v1 (.tfrecord) and v2 (Parquet) segments; convert "
                         "them in separate runs")
    seen: dict[str, object] = {}
    for src in sources:
        prev = seen.get(src.name)
        if prev is not None and str(prev) != str(src) and not (
                isinstance(src, V1Source) and prev.path.resolve() == src.path.resolve()):
            raise ValueError(f"two inputs map to segment {src.name!r}: {prev} and {src}")
        seen[src.name] = src
    return sorted(seen.values(), key=lambda s: s.name)


def segment_name(path: Path) -> str:
    n = Path(path).name
    return n[:-len(".tfrecord")] if n.endswith(".tfrecord") else n


def shard_segments(files: Sequence, shard: tuple[int, int] | None) -> list:
    if shard is None:
        return list(files)
    i, n = shard
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"shard {i}/{n}: need 0 <= i < n")
    return list(files)[i::n]


def _as_source(src):
    return src if isinstance(src, (V1Source, V2Source)) else V1Source(src)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _save_npy(path: Path, arr: np.ndarray) -> str:
    """Write ``arr`` as .npy, fsync it, return the sha256 of the file's bytes (hashed from
    memory, not re-read)."""
    arr = np.ascontiguousarray(arr)
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, np.lib.format.header_data_from_array_1_0(arr))
    h = hashlib.sha256(head.getvalue())
    if arr.size:  # (a memoryview of an empty array cannot be cast)
        h.update(memoryview(arr).cast("B"))
    with open(path, "wb") as f:
        f.write(head.getvalue())
        arr.tofile(f)
        f.flush()
        os.fsync(f.fileno())
    return h.hexdigest()


_GT_RAW = "gt_points.raw"


def _raw_to_npy(raw: Path, path: Path, shape: tuple) -> str:
    """Turn a file of float32 rows into the .npy of ``shape`` (the bytes ``_save_npy`` writes
    for that array), streamed in chunks; remove the raw file; return the sha256."""
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": np.lib.format.dtype_to_descr(
        np.dtype(np.float32)), "fortran_order": False, "shape": tuple(shape)})
    h = hashlib.sha256(head.getvalue())
    want = int(np.prod(shape)) * 4
    if raw.stat().st_size != want:
        raise RuntimeError(f"{raw}: {raw.stat().st_size} bytes, expected {want}")
    with open(raw, "rb") as src, open(path, "wb") as f:
        f.write(head.getvalue())
        for chunk in iter(lambda: src.read(1 << 22), b""):
            h.update(chunk)
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    raw.unlink()
    return h.hexdigest()


def _cat(parts: list, dtype, width: int | None = None) -> np.ndarray:
    if parts:
        return np.concatenate(parts).astype(dtype, copy=False)
    return np.zeros((0,) if width is None else (0, width), dtype)


def _is_trusted(sdir: Path, seg: str, entry: dict | None, options: dict, source: dict) -> bool:
    return (entry is not None and entry.get("options") == options
            and entry.get("source") == source and (sdir / "segments" / seg).is_dir())


def convert_segment(src, out_root, split: str, options: dict,
                    progress: Callable[[int], None] | None = None) -> SegmentResult:
    """Convert one segment (a :class:`V1Source` / :class:`V2Source`, or a .tfrecord path)
    atomically (see the module docstring): the one converted-segment writer of both sources."""
    t0 = time.perf_counter()
    src = _as_source(src)
    seg = src.name
    sdir = split_dir(out_root, split)
    res = SegmentResult(seg, str(src), "converted")
    tmp_root = sdir / ".tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    # left over by an interrupted run of this segment (only this shard converts it)
    for stale in tmp_root.glob(f"{glob.escape(seg)}.*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = tmp_root / f"{seg}.{uuid.uuid4().hex}"
    (tmp / "points").mkdir(parents=True)
    writer = ThreadPoolExecutor(1, thread_name_prefix="npy-writer")
    gt_raw = None
    try:
        source = src.source_info()
        returns, lidars = options["returns"], options["lidars"]
        interval = options["sampled_interval"]
        fr = {k: [] for k in ("frame_index", "timestamp_micros", "frame_id", "context_name",
                              "num_points", "pose")}
        lab = {k: [] for k in ("boxes", "types", "difficulty", "num_points_in_box",
                               "num_top_points_in_box", "ids", "speed", "accel")}
        box_offsets = [0]
        gt = {k: [] for k in ("type", "box", "difficulty", "num_points", "frame_index", "id")}
        # GT points go to disk as they come (a 200-frame segment holds ~1 GB of them)
        gt_raw = open(tmp / _GT_RAW, "wb")
        gt_rows = 0
        writes: dict = {}
        in_flight: deque = deque()
        for fi, d in src.frames(returns, lidars, interval):
            # the disk write + hash + fsync overlap with decoding the next frame
            rel = f"points/{fi:06d}.npy"
            writes[rel] = writer.submit(_save_npy, tmp / rel, d.points)
            in_flight.append(writes[rel])
            while len(in_flight) > 2:   # bound the memory held by queued frames
                in_flight.popleft().result()
            fr["frame_index"].append(fi)
            fr["timestamp_micros"].append(d.timestamp_micros)
            fr["frame_id"].append(make_frame_id(d.context_name, d.timestamp_micros))
            fr["context_name"].append(d.context_name)
            fr["num_points"].append(d.points.shape[0])
            fr["pose"].append(d.pose)
            for k in lab:
                lab[k].append(getattr(d, k))
            box_offsets.append(box_offsets[-1] + d.num_boxes)
            offs, idx = points_in_boxes_indices(d.points, d.boxes)
            for b in range(d.num_boxes):
                k = int(offs[b + 1] - offs[b])
                if k == 0:
                    continue
                p = d.points[idx[offs[b]:offs[b + 1]]].copy()
                p[:, :3] -= d.boxes[b, :3]
                gt_raw.write(memoryview(np.ascontiguousarray(p)).cast("B"))
                gt_rows += k
                gt["type"].append(d.types[b])
                gt["box"].append(d.boxes[b])
                gt["difficulty"].append(d.difficulty[b])
                gt["num_points"].append(k)
                gt["frame_index"].append(fi)
                gt["id"].append(d.ids[b])
            res.frames += 1
            res.points += int(d.points.shape[0])
            if progress is not None:
                progress(1)
        res.corrupt = sorted(src.corrupt, key=lambda c: c["index"])
        if res.frames == 0:   # an empty file (or nothing decodable) is not a converted segment
            raise ValueError(f"{src}: no frames" + (
                f" ({len(res.corrupt)} corrupt record(s))" if res.corrupt else
                " (empty segment)"))
        nf = len(fr["frame_index"])
        frames = {
            "frame_index": np.asarray(fr["frame_index"], np.int64),
            "timestamp_micros": np.asarray(fr["timestamp_micros"], np.int64),
            "frame_id": np.asarray(fr["frame_id"], np.int64),
            "context_name": np.asarray(fr["context_name"], dtype=str) if nf else np.zeros(0, "<U1"),
            "num_points": np.asarray(fr["num_points"], np.int64),
            "pose": np.asarray(fr["pose"], np.float64).reshape(nf, 4, 4),
            "box_offsets": np.asarray(box_offsets, np.int64),
            "boxes": _cat(lab["boxes"], np.float32, 7),
            "types": _cat(lab["types"], np.int8),
            "difficulty": _cat(lab["difficulty"], np.int8),
            "num_points_in_box": _cat(lab["num_points_in_box"], np.int32),
            "num_top_points_in_box": _cat(lab["num_top_points_in_box"], np.int32),
            "ids": np.asarray(sum(lab["ids"], []), dtype=str) if box_offsets[-1]
            else np.zeros(0, "<U1"),
            "speed": _cat(lab["speed"], np.float32, 3),
            "accel": _cat(lab["accel"], np.float32, 3),
        }
        save_npz(tmp / "frames.npz", frames)
        k = len(gt["type"])
        save_npz(tmp / "gt_index.npz", {
            "type": np.asarray(gt["type"], np.int8),
            "box": np.asarray(gt["box"], np.float32).reshape(k, 7),
            "difficulty": np.asarray(gt["difficulty"], np.int8),
            "num_points": np.asarray(gt["num_points"], np.int32),
            "frame_index": np.asarray(gt["frame_index"], np.int64),
            "offset": np.concatenate([[0], np.cumsum(gt["num_points"], dtype=np.int64)[:-1]]
                                     ).astype(np.int64) if k else np.zeros(0, np.int64),
            "id": np.asarray(gt["id"], dtype=str) if k else np.zeros(0, "<U1"),
        })
        file_sums = {rel: fu.result() for rel, fu in writes.items()}
        gt_raw.close()
        file_sums["gt_points.npy"] = _raw_to_npy(tmp / _GT_RAW, tmp / "gt_points.npy",
                                                 (gt_rows, len(POINT_COLUMNS)))
        res.gt_objects = k
        for name in ("frames.npz", "gt_index.npz"):
            file_sums[name] = _sha256_file(tmp / name)
            fd = os.open(tmp / name, os.O_RDONLY)   # durable before the rename makes it visible
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        on_disk = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        if on_disk != sorted(file_sums):
            raise RuntimeError(f"{tmp}: files {on_disk} differ from those written")
        file_sums = dict(sorted(file_sums.items()))
        checksum = hashlib.sha256("".join(f"{f} {h}\n" for f, h in file_sums.items())
                                  .encode()).hexdigest()
        dest = sdir / "segments" / seg
        dest.parent.mkdir(parents=True, exist_ok=True)
        (sdir / "manifest").mkdir(parents=True, exist_ok=True)
        mpath = sdir / "manifest" / f"{seg}.json"
        if mpath.exists():          # an old entry (other options / source): invalidate it first
            mpath.unlink()
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
        _write_json_atomic(mpath, {
            "format_version": FORMAT_VERSION, "segment": seg, "num_frames": res.frames,
            "num_points": res.points, "num_gt_objects": k, "sha256": checksum,
            "files": file_sums, "options": options, "source": source,
            "corrupt_records": res.corrupt})
    except Exception as e:  # report, let the other segments finish
        writer.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(tmp, ignore_errors=True)
        res.status, res.error = "failed", f"{type(e).__name__}: {e}"
    except BaseException:
        writer.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        writer.shutdown(wait=True)
        if gt_raw is not None:
            gt_raw.close()
    res.seconds = time.perf_counter() - t0
    return res


# worker-side progress through a manager queue (ProcessPoolExecutor)
_QUEUE = None


def _die_with_parent(parent: int) -> None:
    """A worker must not outlive the converter (SIGKILLed parents leave their pool's workers
    blocked on a queue forever): Linux's PR_SET_PDEATHSIG, and a watchdog thread everywhere."""
    import signal
    import sys
    import threading
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)   # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):  # pragma: no cover - unusual libc
            pass
    if os.getppid() != parent:   # the parent died before prctl took effect
        os._exit(1)

    def watch():
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)
    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _init_worker(queue, parent: int) -> None:
    global _QUEUE
    _QUEUE = queue
    _die_with_parent(parent)


def _worker(src, out_root, split, options) -> SegmentResult:
    return convert_segment(src, out_root, split, options,
                           progress=(lambda n: _QUEUE.put(n)) if _QUEUE is not None else None)


def _drain(q, tick) -> None:
    import queue
    while True:
        try:
            n = q.get_nowait()
        except queue.Empty:
            return
        if tick:
            tick(n)


def _start_method() -> str:
    """'fork' (workers start in milliseconds) unless the caller may have threads that make
    forking unsafe (torch's thread pools); then 'spawn'."""
    import multiprocessing as mp
    import sys
    if "fork" in mp.get_all_start_methods() and "torch" not in sys.modules:
        return "fork"
    return "spawn"


def verify_segment(out_root, split: str, entry: dict) -> bool:
    """Recompute the checksums of a completed segment."""
    d = split_dir(out_root, split) / "segments" / entry["segment"]
    return all((d / f).is_file() and _sha256_file(d / f) == h for f, h in entry["files"].items())


def convert(inputs, out_root, split: str, workers: int = 1, shard: tuple[int, int] | None = None,
            sampled_interval: int = 1, returns: Sequence[int] = (1, 2),
            lidars: Sequence | None = None, progress: bool = True, verify: bool = False,
            log: Callable[[str], None] | None = print, format: str | None = None
            ) -> ConversionSummary:
    """Convert segments to ``out_root/split`` (see ``detector/datasets/converted.py``).

    inputs: .tfrecord files and/or folders of them (v1), or v2 split folders / component files
    (see :func:`list_inputs`; ``format`` "v1" / "v2" or None to detect it from the layout); both
    give the same converted bytes for the same frames. ``shard=(i, n)`` keeps segments i, i+n, ...
    (0-based) of the name-sorted list. Completed segments are skipped (``verify=True`` also
    re-hashes their files). Returns a :class:`ConversionSummary`; ``summary.ok`` is False if a
    record was skipped or a segment failed.
    """
    t0 = time.perf_counter()
    if not split or "/" in split or split.startswith("."):
        raise ValueError(f"bad split name {split!r}")
    if sampled_interval < 1:
        raise ValueError(f"sampled_interval must be >= 1, got {sampled_interval}")
    rets = sorted(set(int(r) for r in returns))
    if not rets or any(r not in (1, 2) for r in rets):
        raise ValueError(f"returns must be a non-empty subset of (1, 2), got {list(returns)}")
    options = {"returns": rets, "lidars": [LIDAR_NAMES[i] for i in _lidar_ids(lidars)],
               "sampled_interval": int(sampled_interval)}
    all_sources = list_inputs(inputs, format)
    fmt = all_sources[0].format if all_sources else (format or "v1")
    files = shard_segments(all_sources, shard)
    out_root = Path(out_root)
    sdir = split_dir(out_root, split)
    sdir.mkdir(parents=True, exist_ok=True)
    done = completed_segments(out_root, split)
    summary = ConversionSummary(str(out_root), split)
    results: dict[str, SegmentResult] = {}
    todo = []
    for f in files:
        seg = f.name
        entry = done.get(seg)
        if _is_trusted(sdir, seg, entry, options, f.source_info()) and \
                (not verify or verify_segment(out_root, split, entry)):
            results[seg] = SegmentResult(seg, str(f), "resumed", entry["num_frames"],
                                         entry["num_points"], entry["num_gt_objects"],
                                         corrupt=list(entry.get("corrupt_records", [])))
        else:
            todo.append(f)
    if log and results:
        log(f"{len(results)} segment(s) already converted, {len(todo)} to do")
    bar = None
    if progress and todo:
        from tqdm import tqdm
        # the total up front (record headers / Parquet metadata), so the bar shows frames/s
        # and an ETA
        bar = tqdm(total=sum(f.count_frames(int(sampled_interval)) for f in todo), unit="frame",
                   desc=f"convert {split} ({len(todo)} segment(s))", dynamic_ncols=True,
                   smoothing=0.1)
    tick = (lambda n: bar.update(n)) if bar is not None else None
    try:
        if workers <= 1 or len(todo) <= 1:
            for f in todo:
                r = convert_segment(f, out_root, split, options, progress=tick)
                results[r.segment] = r
        else:
            import multiprocessing as mp
            ctx = mp.get_context(_start_method())
            q = ctx.Queue()
            ex = ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                                     initializer=_init_worker, initargs=(q, os.getpid()))
            try:
                futs = {ex.submit(_worker, f, out_root, split, options): f for f in todo}
                pending = set(futs)
                while pending:
                    fin, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                    _drain(q, tick)
                    for fu in fin:
                        try:
                            r = fu.result()
                        except Exception as e:  # the worker process died
                            src = futs[fu]
                            r = SegmentResult(src.name, str(src), "failed",
                                              error=f"{type(e).__name__}: {e}")
                        results[r.segment] = r
                _drain(q, tick)
                ex.shutdown(wait=True)
            except BaseException:
                # Ctrl-C: stop now. Workers are killed mid-segment on purpose: an unfinished
                # segment is only a temp dir, which the next run deletes and redoes.
                procs = list((getattr(ex, "_processes", None) or {}).values())
                ex.shutdown(wait=False, cancel_futures=True)
                for p in procs:
                    p.kill()
                raise
    finally:
        if bar is not None:
            bar.close()
    summary.segments = [results[k] for k in sorted(results)]
    write_root_manifest(out_root, split, options, fmt)
    summary.seconds = time.perf_counter() - t0
    return summary
