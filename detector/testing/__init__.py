"""Generated inputs for the tests, benchmarks and tools/gpu_check.py; the product never imports this.

- ``model_frame.make_frame``: a quick LiDAR-like frame with vehicle boxes (model tests, timings);
- ``metric_data.random_dataset`` / ``prepared``: random detection datasets that exercise the
  Waymo metric's corner cases (cross-checks against the official op, benchmarks);
- ``waymo_frame.make_test_frame`` / ``matrix_float``: small hand-built Waymo ``Frame`` protos
  with random range images in the real layout (decoder and converter tests, benchmarks);
- ``waymo_v2.write_v2_segment`` / ``make_test_segment``: the same frames as Waymo v2 Parquet
  files (the v2 reader's tests; the oracle test checks its schemas against the official ones).

The synthetic Waymo *dataset* the demo trains on is a product feature and lives in
``detector/datasets/synthetic`` (ray-cast scenes written as real-format TFRecords).
"""
