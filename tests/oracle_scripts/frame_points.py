"""Oracle: the official waymo_open_dataset frame_utils range-image -> point conversion.

Runs in .venv-waymo-official (see tests/oracle.py). Input npz: serialized Frames packed as
uint8 ``blob`` + int64 ``offsets`` (F+1,); ``repeat`` (optional int) to time the TF conversion
several times; ``official_parse`` (optional bool, see below). Output npz, per frame f:
``points_<f>`` (N, 3) float32 = the official per-lidar outputs of return 1 then return 2
concatenated (lidars sorted by name, as ``convert_range_image_to_point_cloud`` returns them),
``counts_<f>`` (2, 5) points per return and lidar; ``parse_seconds`` (F,) and
``convert_seconds`` (F, repeat) wall times of the parse and of the conversion (both returns).

Parsing: with ``official_parse`` the official ``parse_range_image_and_camera_projection``
(needs PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python, ~100x slower); by default the script
inflates and parses the same ``MatrixFloat`` protos itself with the fast protobuf backend.
Conversion: the official ``convert_range_image_to_point_cloud`` when camera projections are
present; without them that function fails (it gathers them next to the points), so the script
calls the official ``convert_range_image_to_cartesian`` (the same geometry) and gathers the
valid pixels (range > 0, row-major, like its ``tf.where``) itself.
"""
import sys
import time

import numpy as np
import tensorflow as tf
from waymo_open_dataset import dataset_pb2
from waymo_open_dataset.utils import frame_utils


def _parse(frame, official):
    if official:
        return frame_utils.parse_range_image_and_camera_projection(frame)
    # the same decompress + MatrixFloat parse, without camera projections, on bytes (works with
    # the default upb protobuf backend, ~100x faster than the pure-python one)
    range_images, top_pose = {}, dataset_pb2.MatrixFloat()
    for laser in frame.lasers:
        for k, ri in enumerate((laser.ri_return1, laser.ri_return2)):
            if not ri.range_image_compressed:
                continue
            m = dataset_pb2.MatrixFloat()
            m.ParseFromString(tf.io.decode_compressed(ri.range_image_compressed, "ZLIB").numpy())
            range_images.setdefault(laser.name, []).append(m)
            if k == 0 and laser.name == dataset_pb2.LaserName.TOP and \
                    ri.range_image_pose_compressed:
                top_pose.ParseFromString(tf.io.decode_compressed(
                    ri.range_image_pose_compressed, "ZLIB").numpy())
    return range_images, None, None, top_pose


def main(inp, outp):
    z = np.load(inp)
    blob, offs = z["blob"].tobytes(), z["offsets"]
    repeat = int(z["repeat"]) if "repeat" in z.files else 1
    official_parse = bool(z["official_parse"]) if "official_parse" in z.files else False
    out = {}
    nf = len(offs) - 1
    parse_s = np.zeros(nf)
    conv_s = np.zeros((nf, repeat))
    for f in range(nf):
        frame = dataset_pb2.Frame()
        frame.ParseFromString(blob[offs[f]:offs[f + 1]])
        t = time.perf_counter()
        range_images, cps, _, top_pose = _parse(frame, official_parse)
        if cps is not None and not all(len(cp.data) for v in cps.values() for cp in v):
            cps = None  # empty camera projections: the official gather of them would fail
        parse_s[f] = time.perf_counter() - t
        for rep in range(repeat):
            t = time.perf_counter()
            per_return, counts = [], []
            for ri_index in (0, 1):
                if cps is not None:
                    pts, _ = frame_utils.convert_range_image_to_point_cloud(
                        frame, range_images, cps, top_pose, ri_index=ri_index)
                else:
                    cart = frame_utils.convert_range_image_to_cartesian(
                        frame, range_images, top_pose, ri_index=ri_index)
                    pts = []
                    for c in sorted(frame.context.laser_calibrations, key=lambda c: c.name):
                        ri = range_images[c.name][ri_index]
                        rt = tf.reshape(tf.convert_to_tensor(ri.data), ri.shape.dims)
                        pts.append(tf.gather_nd(cart[c.name], tf.where(rt[..., 0] > 0)).numpy())
                per_return.extend(pts)
                counts.append([p.shape[0] for p in pts])
            conv_s[f, rep] = time.perf_counter() - t
        out[f"points_{f}"] = np.concatenate(per_return).astype(np.float32)
        out[f"counts_{f}"] = np.asarray(counts, np.int64)
    out["parse_seconds"] = parse_s
    out["convert_seconds"] = conv_s
    np.savez(outp, **out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
