"""Waymo Open Dataset (perception v1) data layer (docs/WAYMO.md).

- ``tfrecord``: CRC-checked TFRecord reading (``read_tfrecord``, ``TFRecordError``, skip mode
  with ``SkippedRecord`` reports) and atomic writing (``write_tfrecord``);
- ``frame``: ``decode_frame`` -> ``DecodedFrame`` (points in ``POINT_COLUMNS`` order + labels);
- ``conversion``: segment files -> converted data (``convert``; CLI ``tools/convert_waymo.py``,
  format and readers in ``detector/datasets/converted.py``);
- ``testing``: small hand-built Frames for tests and benchmarks.
"""
from .frame import POINT_COLUMNS, DecodedFrame, FrameDecodeError, decode_frame  # noqa: F401
from .tfrecord import (SkippedRecord, TFRecordError, TFRecordReader, read_tfrecord,  # noqa: F401
                       write_tfrecord)

__all__ = ["POINT_COLUMNS", "DecodedFrame", "FrameDecodeError", "decode_frame", "SkippedRecord",
           "TFRecordError", "TFRecordReader", "read_tfrecord", "write_tfrecord"]
