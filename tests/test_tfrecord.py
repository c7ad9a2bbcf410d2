"""TFRecord framing (detector/datasets/waymo/tfrecord.py): round trips, CRCs, corrupt inputs."""
from __future__ import annotations

import os
import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from detector.datasets.waymo.tfrecord import (TFRecordError, encode_record, masked_crc32c,
                                              read_tfrecord, write_tfrecord)
from oracle import run_oracle


def _crc32c_reference(data: bytes) -> int:
    """Bitwise CRC32C (Castagnoli, reflected 0x82F63B78): slow and obviously correct."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def _masked_reference(data: bytes) -> int:
    c = _crc32c_reference(data)
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) % (1 << 32)


def test_crc32c_check_value_and_reference():
    assert _crc32c_reference(b"123456789") == 0xE3069283  # the standard CRC-32C check value
    rng = np.random.default_rng(0)
    for n in (0, 1, 7, 8, 100, 1000):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert masked_crc32c(data) == _masked_reference(data)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_round_trip(tmp_path_factory, records):
    p = tmp_path_factory.mktemp("rt") / "a.tfrecord"
    assert write_tfrecord(p, records) == len(records)
    assert list(read_tfrecord(p)) == records
    assert os.path.getsize(p) == sum(16 + len(r) for r in records)


def test_framing_bytes(tmp_path):
    p = tmp_path / "x.tfrecord"
    write_tfrecord(p, [b"hello"])
    raw = p.read_bytes()
    assert raw[:8] == struct.pack("<Q", 5)
    assert struct.unpack("<I", raw[8:12])[0] == _masked_reference(raw[:8])
    assert raw[12:17] == b"hello"
    assert struct.unpack("<I", raw[17:21])[0] == _masked_reference(b"hello")
    assert raw == encode_record(b"hello")


def _three(tmp_path, sizes=(100, 50, 80)):
    rng = np.random.default_rng(1)
    recs = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in sizes]
    p = tmp_path / "seg.tfrecord"
    write_tfrecord(p, recs)
    offsets = np.cumsum([0] + [16 + n for n in sizes]).tolist()
    return p, recs, offsets


def _flip(p, pos):
    b = bytearray(p.read_bytes())
    b[pos] ^= 0x40
    p.write_bytes(bytes(b))


@pytest.mark.parametrize("where,reason", [("data", "data CRC mismatch"),
                                          ("data_crc", "data CRC mismatch"),
                                          ("length", "length CRC mismatch"),
                                          ("length_crc", "length CRC mismatch")])
def test_corrupt_record_strict_and_skip(tmp_path, where, reason):
    p, recs, off = _three(tmp_path)
    pos = {"data": off[1] + 12 + 10, "data_crc": off[2] - 2, "length": off[1] + 1,
           "length_crc": off[1] + 9}[where]
    _flip(p, pos)
    it = iter(read_tfrecord(p))
    assert next(it) == recs[0]
    with pytest.raises(TFRecordError) as ei:
        next(it)
    e = ei.value
    assert (e.path, e.index, e.offset) == (str(p), 1, off[1])
    assert reason in str(e) and str(p) in str(e) and "record 1" in str(e) and f"offset {off[1]}" in str(e)

    seen = []
    reader = read_tfrecord(p, skip_corrupt=True, on_skip=seen.append)
    assert list(reader) == [recs[0], recs[2]]   # resynchronised after a bad length too
    assert reader.num_skipped == 1 and reader.num_records == 2 and seen == reader.skipped
    s = reader.skipped[0]
    assert (s.path, s.index, s.offset) == (str(p), 1, off[1]) and reason in s.reason


@pytest.mark.parametrize("chunk", [7, 64, 1 << 22])
def test_resync_after_bad_length_across_scan_chunks(tmp_path, monkeypatch, chunk):
    from detector.datasets.waymo import tfrecord
    monkeypatch.setattr(tfrecord, "_RESYNC_CHUNK", chunk)
    p, recs, off = _three(tmp_path, sizes=(30, 500, 20, 40))
    _flip(p, off[1] + 2)                      # bad length of record 1
    b = bytearray(p.read_bytes())
    b[off[1] + 40:off[1] + 52] = encode_record(b"")[:12]   # a fake header inside its data
    p.write_bytes(bytes(b))
    reader = read_tfrecord(p, skip_corrupt=True)
    assert list(reader) == [recs[0], recs[2], recs[3]]
    (s,) = reader.skipped
    assert (s.index, s.offset, s.nbytes) == (1, off[1], off[2] - off[1])
    assert [reader.last_index, reader.last_offset] == [3, off[3]]


@pytest.mark.parametrize("cut", [3, 12 + 40, 16 + 50 - 1])
def test_truncated(tmp_path, cut):
    p, recs, off = _three(tmp_path)
    size = off[2] + cut  # cut inside record 2: header, data, or the data CRC
    with open(p, "r+b") as f:
        f.truncate(size)
    with pytest.raises(TFRecordError, match="truncated") as ei:
        list(read_tfrecord(p))
    assert (ei.value.index, ei.value.offset) == (2, off[2])
    reader = read_tfrecord(p, skip_corrupt=True)
    assert list(reader) == recs[:2]
    assert [(s.index, s.offset) for s in reader.skipped] == [(2, off[2])]
    assert "truncated" in reader.skipped[0].reason


def test_two_problems_are_both_counted(tmp_path):
    p, recs, off = _three(tmp_path, sizes=(30, 40, 50, 60, 70))
    _flip(p, off[1] + 12)
    _flip(p, off[3] + 2)
    reader = read_tfrecord(p, skip_corrupt=True)
    assert list(reader) == [recs[0], recs[2], recs[4]]
    assert [(s.index, s.offset) for s in reader.skipped] == [(1, off[1]), (3, off[3])]
    assert [reader.last_index, reader.last_offset] == [4, off[4]]


def test_write_is_atomic(tmp_path):
    p = tmp_path / "keep.tfrecord"
    write_tfrecord(p, [b"old"])

    def gen():
        yield b"new1"
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_tfrecord(p, gen())
    assert list(read_tfrecord(p)) == [b"old"]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["keep.tfrecord"]
    with pytest.raises(TypeError, match="record 1"):
        write_tfrecord(p, [b"a", "not bytes"])
    assert list(read_tfrecord(p)) == [b"old"]


@pytest.mark.oracle
def test_matches_tensorflow(tmp_path):
    rng = np.random.default_rng(2)
    recs = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (0, 1, 1000, 70000)]
    ours = tmp_path / "ours.tfrecord"
    write_tfrecord(ours, recs)
    tf_out = tmp_path / "tf.tfrecord"
    out = run_oracle("oracle_scripts/tfrecord_io.py", {
        "blob": np.frombuffer(b"".join(recs), np.uint8), "offsets": np.cumsum([0] + [len(r) for r in recs]),
        "tf_out": np.array(str(tf_out)), "ours": np.array(str(ours))})
    blob, offs = out["blob"].tobytes(), out["offsets"]
    assert [blob[offs[i]:offs[i + 1]] for i in range(len(offs) - 1)] == recs  # TF reads ours
    assert list(read_tfrecord(tf_out)) == recs                                # we read TF's
    assert tf_out.read_bytes() == ours.read_bytes()
