"""Knobs of the synthetic Waymo scene generator (one dataclass, all defaults documented).

Counts are ``(low, high)`` inclusive ranges sampled once per segment; distances in metres,
speeds in m/s. The defaults give real-looking TOP frames (~150k return-1 points, 15-40 vehicles
within 75 m); tests shrink ``half_length`` and the counts for speed.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["SceneConfig"]


@dataclass(frozen=True)
class SceneConfig:
    # --- layout (local world frame: main road along +x, ego starts at the origin) -----------
    half_length: float = 130.0        # the scene spans x in [-half_length, half_length + travel]
    lane_width: float = 3.5           # two lanes each way: |y| < 2 * lane_width
    bike_lane_width: float = 1.5
    parking_width: float = 2.5
    sidewalk_width: float = 4.5       # buildings start behind it
    cross_street_prob: float = 0.6    # chance of a perpendicular street ahead of the ego
    building_gap_prob: float = 0.15   # chance of an empty lot between two buildings
    building_height: tuple = (6.0, 24.0)
    building_depth: tuple = (8.0, 25.0)
    # --- ground ------------------------------------------------------------------------------
    max_slope: float = 0.02           # plane gradient per axis
    ground_noise_amplitude: float = 0.04  # per sinusoid; three sinusoids
    ground_noise_wavelength: tuple = (8.0, 40.0)
    # --- objects -------------------------------------------------------------------------------
    parked_fill: tuple = (0.35, 0.7)   # probability that a parking slot holds a vehicle
    moving_vehicles_per_lane: tuple = (1, 4)
    cross_vehicles: tuple = (0, 6)
    # shares of car (sedan), hatchback, suv, van, truck, bus (scene.VEHICLE_KINDS)
    vehicle_mix: tuple = (0.3, 0.18, 0.32, 0.1, 0.06, 0.04)
    # chance that one side of the main road parks parallel / in angled bays / perpendicular
    # (most streets park parallel; docs/benchmarks/training.md 3c for what bays cost the demo)
    parking_modes: tuple = (0.8, 0.12, 0.08)
    parked_yaw_std: float = 0.05      # rad (~3 deg): parked cars are not exactly straight
    turning_vehicles: tuple = (0, 3)  # on the junction's turns (with a cross street)
    turning_speed: tuple = (2.0, 7.0)
    pedestrians: tuple = (8, 28)      # ~12 labelled per frame, as in Waymo v1
    # Waymo v1 has ~0.3 cyclists per frame; the scenes hold ~4x more so that a detector trained
    # on a few dozen frames sees enough of them (measured: ~1.2 per frame, docs/synthetic.md).
    cyclists: tuple = (1, 4)
    signs: tuple = (4, 12)
    poles_spacing: tuple = (18.0, 35.0)
    tree_prob: float = 0.5
    ego_speed: tuple = (0.0, 14.0)
    ego_stopped_prob: float = 0.15
    traffic_speed: tuple = (0.0, 15.0)
    # --- sensor model ----------------------------------------------------------------------
    range_noise_std: float = 0.015    # metres, Gaussian, added to every return
    dropout_base: float = 0.005       # per-pixel dropout on any surface
    beam_divergence: float = 0.0025   # rad, beam footprint radius / range (edge returns)
    second_return_min_separation: float = 0.3  # metres between return 1 and return 2
    intensity_noise: float = 0.1      # log-normal sigma
    label_range: float = 75.0         # labels only for boxes whose centre is this close (2D)
    global_offset_scale: float = 4.0e4  # Frame.pose translations look like real ones
    frame_dt: float = 0.1             # 10 Hz
    sweep_time: float = 0.1           # one TOP revolution
    zlib_level: int = 1               # 1: ~2x faster than 6 for ~5% bigger files (bench)
    grid_cell: float = 4.0            # ray-casting acceleration grid cell size

    def replace(self, **kw) -> "SceneConfig":
        return replace(self, **kw)

    def validate(self) -> None:
        for name in ("parked_fill", "moving_vehicles_per_lane", "cross_vehicles", "pedestrians",
                     "cyclists", "signs", "turning_vehicles", "turning_speed", "building_height",
                     "building_depth", "ego_speed", "traffic_speed", "poles_spacing",
                     "ground_noise_wavelength"):
            lo, hi = getattr(self, name)
            if lo > hi or lo < 0:
                raise ValueError(f"SceneConfig.{name} = {(lo, hi)}: expected 0 <= low <= high")
        for name, n in (("vehicle_mix", 6), ("parking_modes", 3)):
            v = getattr(self, name)
            if len(v) != n or min(v) < 0 or sum(v) <= 0:
                raise ValueError(f"SceneConfig.{name} = {v}: expected {n} non-negative shares, "
                                 f"not all zero")
        if self.half_length < 20:
            raise ValueError(f"SceneConfig.half_length = {self.half_length}: expected >= 20 m")
        if self.range_noise_std < 0 or self.dropout_base < 0 or self.dropout_base >= 1:
            raise ValueError("SceneConfig: range_noise_std must be >= 0 and dropout_base in [0, 1)")
        if self.grid_cell <= 0.5:
            raise ValueError(f"SceneConfig.grid_cell = {self.grid_cell}: expected > 0.5 m")
