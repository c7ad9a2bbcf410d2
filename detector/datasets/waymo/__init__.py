"""Waymo Open Dataset data layer, v1 (TFRecord) and v2 (Parquet) input (docs/WAYMO.md,
docs/data_formats.md).

- ``tfrecord``: CRC-checked TFRecord reading (``read_tfrecord``, ``TFRecordError``, skip mode
  with ``SkippedRecord`` reports) and atomic writing (``write_tfrecord``);
- ``frame``: ``decode_frame`` -> ``DecodedFrame`` (points in ``POINT_COLUMNS`` order + labels);
- ``parquet``: ``iter_v2_frames`` -> the same ``DecodedFrame``s from a v2 split (pyarrow only);
- ``conversion``: segment files -> converted data (``convert``; CLI ``tools/convert_waymo.py``,
  format and readers in ``detector/datasets/converted.py``);
- ``parquet``: the v2 reader (``iter_v2_frames``); test inputs live in ``detector.testing``.
"""
from .frame import POINT_COLUMNS, DecodedFrame, FrameDecodeError, decode_frame  # noqa: F401
from .tfrecord import (SkippedRecord, TFRecordError, TFRecordReader, read_tfrecord,  # noqa: F401
                       write_tfrecord)

__all__ = ["POINT_COLUMNS", "DecodedFrame", "FrameDecodeError", "decode_frame", "SkippedRecord",
           "TFRecordError", "TFRecordReader", "read_tfrecord", "write_tfrecord"]
