"""Open3D scenes of a LiDAR frame: points, ground-truth and predicted box wireframes.

Two ways to show the same scene:

* :func:`render_frame` / :func:`render_frame_png` draw it off screen with Open3D's Filament
  renderer (``open3d.visualization.rendering.OffscreenRenderer``). No display is needed: on a
  machine without a GPU Open3D picks Mesa's software Vulkan driver (llvmpipe) and runs on the
  CPU. The camera is an explicit pinhole model (:class:`geometry.Camera`) handed to
  ``setup_camera(intrinsic, extrinsic, w, h)``, so tests can project a 3D point and check the
  pixel it lands on. Post-processing (tone mapping, anti-aliasing) is switched off, which makes
  unlit colours come out exactly (colour 0.9 -> pixel 229/230) and rendering faster.
  Multi-sample anti-aliasing stays on by default (smooth lines for reports); ``antialias=False``
  trades it for ~2.5x speed.
  Scores of predictions are written next to their boxes on the finished image with Pillow
  (Filament has no text), at the projected top centre of each box.
* :func:`show_interactive` opens Open3D's window (needs a display) with keys to step through
  frames.

Boxes follow the project convention and are drawn from :func:`geometry.box_corners`.
"""
from __future__ import annotations

import contextlib
import gc
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from detector.visualization.colors import (BACKGROUND_COLOR, EGO_COLOR, PREDICTION_COLOR,
                                           point_colors, type_color)
from detector.visualization.geometry import (Camera, as_boxes, box_corners, box_edge_segments,
                                             heading_marker_segments, make_camera)

# A box the size of a Waymo vehicle at the vehicle-frame origin (which sits on the ground near
# the rear axle), so the viewer knows where the ego vehicle is and which way it faces.
EGO_BOX = np.array([[1.4, 0.0, 0.85, 4.8, 2.1, 1.7, 0.0]])


class DisplayUnavailableError(RuntimeError):
    """An on-screen window was asked for where there is no display."""


def has_display() -> bool:
    """True where a window can open: Windows/macOS, or Linux/BSD with X11 or Wayland."""
    if sys.platform.startswith(("win", "darwin")):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _import_open3d():
    """Import Open3D for headless use and keep its console quiet.

    Without a display, EGL (Open3D's fallback when there is no Vulkan device) must not look for
    an X server: ``EGL_PLATFORM=surfaceless``. With Mesa's Vulkan driver present, Open3D >= 0.19
    selects it by itself; nothing else is needed here. Set before the first import so the
    library sees it, and only when the user has not chosen otherwise.
    """
    if not has_display():
        os.environ.setdefault("EGL_PLATFORM", "surfaceless")
    import open3d as o3d
    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)
    return o3d


@contextlib.contextmanager
def _captured_native_output():
    """Send the C++ side's stdout/stderr (Filament's start-up banner) to a temporary file.

    Yields a list that holds the captured text afterwards, so an error can quote it.
    """
    captured: list[str] = []
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile(mode="w+b") as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield captured
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            captured.append(sink.read().decode(errors="replace"))


# Filament's engine is expensive to start (~1-3 s on the CPU); a renderer is kept for the life
# of the process and emptied after each frame. Only ONE renderer may exist at a time: Open3D
# shares a single Filament engine, and with two renderers alive the process aborts at exit
# ("destroying MaterialInstance ... still in use"). A new image size replaces the renderer.
_RENDERER: dict[str, object] = {}


def _get_renderer(width: int, height: int):
    key = (int(width), int(height))
    if _RENDERER.get("key") == key:
        return _RENDERER["renderer"]
    release_renderers()
    o3d = _import_open3d()
    try:
        with _captured_native_output() as log:
            renderer = o3d.visualization.rendering.OffscreenRenderer(*key)
    except Exception as exc:  # Open3D raises RuntimeError with little context
        raise RuntimeError(
            f"Open3D could not create an off-screen renderer of {key[0]}x{key[1]}: {exc}. "
            "It needs Mesa's Vulkan driver or EGL (Debian: libvulkan1 mesa-vulkan-drivers "
            "libegl1 libgl1; see tools/setup_env.sh). Native log:\n" + "".join(log)) from exc
    _RENDERER.update(key=key, renderer=renderer)
    return renderer


def release_renderers() -> None:
    """Empty and drop the cached off-screen renderer (frees the Filament resources)."""
    renderer = _RENDERER.pop("renderer", None)
    _RENDERER.pop("key", None)
    if renderer is not None:
        renderer.scene.clear_geometry()
        del renderer
        gc.collect()


@dataclass
class SceneLines:
    """Line segments to draw: ``segments`` (K, 2, 3) and one RGB colour per segment (K, 3)."""
    segments: np.ndarray
    colors: np.ndarray

    @staticmethod
    def concat(parts: Sequence["SceneLines"]) -> "SceneLines":
        parts = [p for p in parts if len(p.segments)]
        if not parts:
            return SceneLines(np.zeros((0, 2, 3)), np.zeros((0, 3)))
        return SceneLines(np.concatenate([p.segments for p in parts]),
                          np.concatenate([p.colors for p in parts]))


def box_lines(boxes, colors) -> SceneLines:
    """Wireframe (12 edges) and heading marker (3 segments) of each box, in its colour.

    ``colors`` is one RGB triple for all boxes or (M, 3), one per box.
    """
    b = as_boxes(boxes)
    if len(b) == 0:
        return SceneLines(np.zeros((0, 2, 3)), np.zeros((0, 3)))
    cols = np.broadcast_to(np.asarray(colors, dtype=np.float64), (len(b), 3))
    # (M, 15, 2, 3): 12 edges then 3 heading-marker segments per box
    segs = np.concatenate([box_edge_segments(b), heading_marker_segments(b)], axis=1)
    per_seg = np.repeat(cols[:, None, :], segs.shape[1], axis=1)
    return SceneLines(segs.reshape(-1, 2, 3), per_seg.reshape(-1, 3))


def _filter_predictions(pred_boxes, pred_scores, score_thr: float):
    boxes = as_boxes(pred_boxes, "pred_boxes")
    if pred_scores is None:
        scores = np.ones(len(boxes))
    else:
        scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
        if len(scores) != len(boxes):
            raise ValueError(f"pred_scores has {len(scores)} entries but pred_boxes has "
                             f"{len(boxes)} rows")
    keep = scores >= score_thr
    return boxes[keep], scores[keep]


def _gt_types(gt_boxes: np.ndarray, gt_types) -> np.ndarray:
    if gt_types is None:
        return np.ones(len(gt_boxes), dtype=np.int64)     # VEHICLE
    types = np.asarray(gt_types).reshape(-1)
    if len(types) != len(gt_boxes):
        raise ValueError(f"gt_types has {len(types)} entries but gt_boxes has {len(gt_boxes)} rows")
    return types


def frame_lines(gt_boxes, gt_types, pred_boxes=None, pred_scores=None, score_thr: float = 0.0,
                draw_ego: bool = True) -> SceneLines:
    """All line segments of a frame: ego marker, ground truth by type, then predictions."""
    gt = as_boxes(gt_boxes, "gt_boxes")
    types = _gt_types(gt, gt_types)
    gt_cols = np.array([type_color(t) for t in types]).reshape(-1, 3)
    pred, _ = _filter_predictions(pred_boxes, pred_scores, score_thr)
    parts = [box_lines(EGO_BOX, EGO_COLOR)] if draw_ego else []
    parts += [box_lines(gt, gt_cols), box_lines(pred, PREDICTION_COLOR)]
    return SceneLines.concat(parts)


def _points_xyz(points) -> np.ndarray:
    """The drawable rows of ``points``: every drawing path drops rows with a non-finite value
    (NaN / inf coordinates from a sensor dropout would break the camera bounds and the plot's
    axes) and says how many it dropped (a ``NonFinitePointsWarning``)."""
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(f"points: expected shape (N, C >= 3), got {pts.shape}")
    if np.issubdtype(pts.dtype, np.floating):
        finite = np.isfinite(pts).all(axis=1)
        if not finite.all():
            import warnings
            warnings.warn(f"points: dropped {int((~finite).sum())} of {len(pts)} points with a "
                          f"non-finite value before drawing", NonFinitePointsWarning, stacklevel=3)
            pts = pts[finite]
    return pts


class NonFinitePointsWarning(UserWarning):
    """Points with NaN / inf values were left out of a drawing (the message counts them)."""


def _open3d_geometries(o3d, points, point_rgb, lines: SceneLines):
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points[:, :3].astype(np.float64)))
    pcd.colors = o3d.utility.Vector3dVector(point_rgb)
    n = len(lines.segments)
    ls = o3d.geometry.LineSet(
        o3d.utility.Vector3dVector(lines.segments.reshape(-1, 3)),
        o3d.utility.Vector2iVector(np.arange(2 * n, dtype=np.int32).reshape(-1, 2)))
    ls.colors = o3d.utility.Vector3dVector(lines.colors)
    return pcd, ls


def render_frame(points, gt_boxes, gt_types=None, pred_boxes=None, pred_scores=None, *,
                 view: str = "chase", width: int = 1280, height: int = 720,
                 camera: Camera | None = None, color_by: str = "intensity",
                 score_thr: float = 0.0, point_size: float | None = None,
                 line_width: float = 2.0, annotate: bool = True, title: str | None = None,
                 draw_ego: bool = True, cull: bool = True,
                 antialias: bool = True) -> tuple[np.ndarray, Camera]:
    """Render a frame off screen; returns the image (height, width, 3) uint8 and its camera.

    Args:
        points: (N, C >= 3) float, columns as ``load_points`` (x, y, z, intensity, elongation,
            return_index, lidar_id, nlz); ``color_by`` picks the column that colours them.
        gt_boxes: (M, 7) ground-truth boxes; gt_types: (M,) Waymo types (None = all VEHICLE).
        pred_boxes: (K, 7) detections or None; pred_scores: (K,) (None = all 1).
        view: ``"chase"`` (high behind the ego vehicle) or ``"bev"`` (top down); ignored when
            ``camera`` is given.
        score_thr: predictions with a lower score are not drawn.
        point_size: in pixels; default 2, or 1 for the top-down view (where points are dense).
        line_width: in pixels.
        annotate: write prediction scores, a legend and ``title`` on the image.
        draw_ego: draw the ego vehicle's outline at the origin.
        cull: send the renderer only the nearest point of each pixel (``culling.py``): the
            same picture for 1-pixel points (tested), visually the same for larger ones, and
            2-3x faster on a CPU renderer (docs/benchmarks/visualization.md).
        antialias: Filament's multi-sample anti-aliasing (smooth lines); off is ~2.5x faster
            on the CPU, with jagged lines.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    pts = _points_xyz(points)
    lines = frame_lines(gt_boxes, gt_types, pred_boxes, pred_scores, score_thr, draw_ego)
    cam = camera if camera is not None else make_camera(view, width, height)
    if (cam.width, cam.height) != (width, height):
        raise ValueError(f"camera is {cam.width}x{cam.height} but the image is {width}x{height}")
    if point_size is None:
        point_size = 1.0 if (camera is None and view == "bev") else 2.0
    if cull and len(pts):
        from detector.visualization.culling import nearest_point_per_pixel
        pts = pts[nearest_point_per_pixel(pts, cam, margin=int(np.ceil(point_size)))]
    rgb = point_colors(pts, color_by)

    o3d = _import_open3d()
    renderer = _get_renderer(width, height)
    rendering = o3d.visualization.rendering
    pcd, ls = _open3d_geometries(o3d, pts, rgb, lines)
    point_mat = rendering.MaterialRecord()
    point_mat.shader = "defaultUnlit"
    point_mat.point_size = float(point_size)
    line_mat = rendering.MaterialRecord()
    line_mat.shader = "unlitLine"
    line_mat.line_width = float(line_width)
    scene = renderer.scene
    try:
        scene.set_background([*BACKGROUND_COLOR, 1.0])
        scene.view.set_post_processing(False)
        scene.view.set_antialiasing(bool(antialias))
        if len(pts):
            scene.add_geometry("points", pcd, point_mat)
        if len(lines.segments):
            scene.add_geometry("boxes", ls, line_mat)
        renderer.setup_camera(cam.intrinsic, cam.extrinsic, width, height)
        image = np.array(renderer.render_to_image(), dtype=np.uint8, copy=True)
    finally:
        scene.clear_geometry()
    if image.shape != (height, width, 3):
        image = image[..., :3]
    if annotate:
        pred, scores = _filter_predictions(pred_boxes, pred_scores, score_thr)
        gt = as_boxes(gt_boxes, "gt_boxes")
        image = annotate_image(image, cam, pred, scores, _gt_types(gt, gt_types), title)
    return image, cam


def annotate_image(image: np.ndarray, camera: Camera, pred_boxes: np.ndarray,
                   pred_scores: np.ndarray, gt_types: np.ndarray,
                   title: str | None = None) -> np.ndarray:
    """Write each prediction's score above its box, a legend and a title onto ``image``."""
    from PIL import Image, ImageDraw, ImageFont

    from detector.structures import WAYMO_TYPE_NAMES

    font_px = max(11, camera.height // 50)
    font = ImageFont.load_default(size=font_px)
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    pred_rgb = tuple(int(round(255 * c)) for c in PREDICTION_COLOR)
    if len(pred_boxes):
        # Above the highest point of the box's outline in the picture, outlined in black so
        # the number stays readable over a dense point cloud.
        corners = box_corners(pred_boxes)                             # (K, 8, 3)
        uv, _ = camera.project(corners)
        ok = camera.visible(corners).all(axis=1)
        for box_uv, s, good in zip(uv, pred_scores, ok):
            if good:
                draw.text((box_uv[:, 0].mean(), box_uv[:, 1].min() - 3), f"{s:.2f}",
                          fill=pred_rgb, font=font, anchor="mb", stroke_width=2,
                          stroke_fill=(0, 0, 0))
    # Legend: the types present in this frame's ground truth, then predictions.
    entries = [(WAYMO_TYPE_NAMES.get(int(t), f"type {int(t)}"), type_color(t))
               for t in sorted(set(int(t) for t in gt_types))]
    entries = [(f"GT {name}", col) for name, col in entries]
    if len(pred_boxes):
        entries.append((f"predicted ({len(pred_boxes)})", PREDICTION_COLOR))
    y = 6
    for line in (title.splitlines() if title else []):
        draw.text((8, y), line, fill=(235, 235, 235), font=font, stroke_width=2,
                  stroke_fill=(0, 0, 0))
        y += font_px + 4
    y += 2 if title else 0
    for text, col in entries:
        rgb = tuple(int(round(255 * c)) for c in col)
        draw.rectangle([8, y + 2, 8 + font_px - 4, y + font_px - 2], fill=rgb)
        draw.text((8 + font_px + 2, y), text, fill=rgb, font=font, stroke_width=2,
                  stroke_fill=(0, 0, 0))
        y += font_px + 4
    return np.asarray(pil)


def write_png(image: np.ndarray, out_path) -> Path:
    """Write an RGB image as PNG atomically (temporary file in the same folder, then rename)."""
    from PIL import Image

    from ..fileio import atomic_write

    out = Path(out_path)
    with atomic_write(out, fsync=False) as f:
        Image.fromarray(np.ascontiguousarray(image)).save(f, format="PNG")
    return out


def render_frame_png(points, gt_boxes, gt_types=None, pred_boxes=None, pred_scores=None, *,
                     out_path, view: str = "chase", width: int = 1280, height: int = 720,
                     **kwargs) -> Camera:
    """Render a frame off screen (see :func:`render_frame`) and write it to ``out_path`` as PNG.

    Returns the camera used, so callers can project points into the picture.
    """
    image, cam = render_frame(points, gt_boxes, gt_types, pred_boxes, pred_scores, view=view,
                              width=width, height=height, **kwargs)
    write_png(image, out_path)
    return cam


@dataclass
class FrameView:
    """What the interactive viewer shows for one frame."""
    points: np.ndarray
    gt_boxes: np.ndarray
    gt_types: np.ndarray | None = None
    pred_boxes: np.ndarray | None = None
    pred_scores: np.ndarray | None = None
    title: str = ""


def show_interactive(get_frame: Callable[[int], FrameView], num_frames: int, start: int = 0, *,
                     color_by: str = "intensity", score_thr: float = 0.0,
                     point_size: float = 2.0, width: int = 1600, height: int = 900) -> None:
    """Open Open3D's window on frame ``start``; N / Right = next frame, P / Left = previous,
    Q / Esc = quit. ``get_frame(i)`` loads frame i (0 <= i < num_frames) when it is shown.

    Raises DisplayUnavailableError where there is no display (use render_frame_png instead).
    """
    if not has_display():
        raise DisplayUnavailableError(
            "no display: the interactive viewer needs DISPLAY or WAYLAND_DISPLAY to be set. "
            "Render off screen instead with --save out.png (optionally --view bev)")
    if not 0 <= start < num_frames:
        raise IndexError(f"frame {start} is out of range: there are {num_frames} frames")
    o3d = _import_open3d()
    vis = o3d.visualization.VisualizerWithKeyCallback()
    if not vis.create_window(window_name="detector: frame viewer", width=width, height=height):
        raise DisplayUnavailableError(
            "Open3D could not open a window on this display; render off screen with --save out.png")
    opt = vis.get_render_option()
    opt.background_color = np.asarray(BACKGROUND_COLOR)
    opt.point_size = float(point_size)
    state = {"index": start, "first": True}

    def load(index: int) -> None:
        fv = get_frame(index)
        pts = _points_xyz(fv.points)
        lines = frame_lines(fv.gt_boxes, fv.gt_types, fv.pred_boxes, fv.pred_scores, score_thr)
        pcd, ls = _open3d_geometries(o3d, pts, point_colors(pts, color_by), lines)
        vis.clear_geometries()
        vis.add_geometry(pcd, reset_bounding_box=state["first"])
        vis.add_geometry(ls, reset_bounding_box=state["first"])
        if state["first"]:
            cam = make_camera("chase", width, height)
            params = vis.get_view_control().convert_to_pinhole_camera_parameters()
            params.extrinsic = cam.extrinsic
            vis.get_view_control().convert_from_pinhole_camera_parameters(params, True)
            state["first"] = False
        print(f"[{index + 1}/{num_frames}] {fv.title}", flush=True)

    def step(delta: int):
        def callback(_vis) -> bool:
            new = state["index"] + delta
            if 0 <= new < num_frames:
                state["index"] = new
                load(new)
            return True
        return callback

    for key in (ord("N"), 262):        # 262 = GLFW right arrow
        vis.register_key_callback(key, step(+1))
    for key in (ord("P"), 263):        # 263 = GLFW left arrow
        vis.register_key_callback(key, step(-1))
    load(start)
    print("keys: N / Right = next frame, P / Left = previous frame, Q / Esc = quit", flush=True)
    vis.run()
    vis.destroy_window()


__all__ = ["DisplayUnavailableError", "FrameView", "SceneLines", "annotate_image", "box_lines",
           "box_corners", "frame_lines", "has_display", "release_renderers", "render_frame",
           "render_frame_png", "show_interactive", "write_png"]
