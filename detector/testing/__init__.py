"""Generated inputs for the tests and benchmarks only; nothing in the product imports this.

- ``model_frame.make_frame``: a quick LiDAR-like frame with vehicle boxes (model tests, timings);
- ``metric_data.random_dataset`` / ``prepared``: random detection datasets that exercise the
  Waymo metric's corner cases (cross-checks against the official op, benchmarks);
- ``waymo_frame.make_test_frame`` / ``matrix_float``: small hand-built Waymo ``Frame`` protos
  with random range images in the real layout (decoder and converter tests, benchmarks).

The synthetic Waymo *dataset* the demo trains on is a product feature and lives in
``detector/datasets/synthetic`` (ray-cast scenes written as real-format TFRecords).
"""
