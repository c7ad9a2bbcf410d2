"""Oracle: v1 Frames -> Waymo v2 Parquet with the official ``compat_v1`` extractors.

Runs in .venv-waymo-official (see tests/oracle.py) with PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=
python (the extractors need it). Input npz: serialized Frames of ONE segment packed as uint8
``blob`` + int64 ``offsets`` (F+1,), and ``out_dir`` (a str array): the v2 split folder to write
(``<out_dir>/<component>/<context>.parquet``, each component's rows as the extractors give them,
in frame order, with the component's official ``schema()``). Output npz: ``schema_<component>``
(the official schema as text, without metadata) and ``rows_<component>`` (rows written).
"""
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from waymo_open_dataset import dataset_pb2
from waymo_open_dataset.v2.perception.compat_v1 import box as v2_box
from waymo_open_dataset.v2.perception.compat_v1 import context as v2_context
from waymo_open_dataset.v2.perception.compat_v1 import interfaces
from waymo_open_dataset.v2.perception.compat_v1 import lidar as v2_lidar
from waymo_open_dataset.v2.perception.compat_v1 import pose as v2_pose


def main(inp, outp):
    z = np.load(inp)
    blob, offs = z["blob"].tobytes(), z["offsets"]
    out_dir = Path(str(z["out_dir"]))
    frames = []
    for f in range(len(offs) - 1):
        fr = dataset_pb2.Frame()
        fr.ParseFromString(blob[offs[f]:offs[f + 1]])
        frames.append(fr)
    ex = {
        "lidar": v2_lidar.LiDARComponentExtractor(),
        "lidar_pose": v2_lidar.LiDARPoseComponentExtractor(),
        "lidar_calibration": v2_context.LiDARCalibrationComponentExtractor(),
        "lidar_box": v2_box.LiDARBoxComponentExtractor(),
        "vehicle_pose": v2_pose.VehiclePoseFrameExtractor(),
    }
    rows = {k: [] for k in ex}
    for i, fr in enumerate(frames):
        for laser in fr.lasers:
            src = interfaces.LiDARComponentSrc(frame=fr, laser=laser)
            for k in ("lidar", "lidar_pose"):
                rows[k].extend(c.to_flatten_dict() for c in ex[k](src))
        if i == 0:   # calibrations are per segment
            for cal in fr.context.laser_calibrations:
                src = interfaces.LiDARCalibrationComponentSrc(frame=fr, lidar_calibration=cal)
                rows["lidar_calibration"].extend(c.to_flatten_dict()
                                                 for c in ex["lidar_calibration"](src))
        for lab in fr.laser_labels:
            src = interfaces.LiDARLabelComponentSrc(frame=fr, lidar_label=lab)
            rows["lidar_box"].extend(c.to_flatten_dict() for c in ex["lidar_box"](src))
        rows["vehicle_pose"].extend(c.to_flatten_dict()
                                    for c in ex["vehicle_pose"](interfaces.FrameComponentSrc(fr)))
    out = {}
    ctx = frames[0].context.name
    for k, e in ex.items():
        schema = e.schema()
        out[f"schema_{k}"] = np.array(schema.to_string(show_schema_metadata=False))
        out[f"rows_{k}"] = np.array(len(rows[k]))
        table = pa.Table.from_pylist(rows[k], schema=schema) if rows[k] else schema.empty_table()
        p = out_dir / k / f"{ctx}.parquet"
        p.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, p)
    np.savez(outp, **out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
