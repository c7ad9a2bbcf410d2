"""Drawing frames: points, ground truth and detections in Open3D (on screen and off screen) and
in matplotlib bird's-eye-view plots. Command line: ``tools/visualize.py``.

Heavy imports (Open3D, matplotlib, torch) happen only inside the functions that need them.
"""
from detector.visualization.bev import plot_bev
from detector.visualization.geometry import (BOX_EDGES, Camera, box_corners, box_edge_segments,
                                             bev_camera, chase_camera, heading_marker_segments,
                                             make_camera)
from detector.visualization.pictures import write_demo_pictures, write_frame_pictures
from detector.visualization.render import (DisplayUnavailableError, FrameView, has_display,
                                           render_frame, render_frame_png, show_interactive)

__all__ = ["BOX_EDGES", "Camera", "DisplayUnavailableError", "FrameView", "bev_camera",
           "box_corners", "box_edge_segments", "chase_camera", "has_display",
           "heading_marker_segments", "make_camera", "plot_bev", "render_frame",
           "render_frame_png", "show_interactive", "write_demo_pictures", "write_frame_pictures"]
