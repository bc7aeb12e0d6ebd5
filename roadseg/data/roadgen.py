"""Synthetic road scenes written in the KITTI Road on-disk layout.

The project trains, demos and tests offline on these instead of the real KITTI
download. Scenes come from a simple ground-plane camera model: a row below the
horizon sees the ground at depth parameter t (0 at the horizon, 1 at the bottom
row), i.e. at distance `near_m / t`, and a point `s` metres right of the road
centre appears `s * px_per_m * t` pixels right of the road centre line. Road,
markings, kerbs, facades, trees and cars are all placed in those world
coordinates, so they shrink toward the vanishing point as in real footage. Grey
pavements, grey walls and cast shadows make colour alone a poor road detector:
a network has to learn the road's shape, texture and context.

Usage: python roadgen.py OUT_DIR [--train N] [--test N] [--height H --width W] [--seed S]
"""
import argparse
import concurrent.futures
import os
import time
from dataclasses import dataclass
from functools import partial

import imageio.v3 as iio
import numpy as np
from scipy import ndimage
from tqdm import tqdm

from roadseg import atomic
from roadseg.data.datasets import DONT_CARE_COLOR, NOT_ROAD_COLOR, ROAD_COLOR

CATEGORIES = ('um', 'umm', 'uu')
DEFAULT_IMAGE_SHAPE = (188, 621)
MIN_SIDE = 32

# Real KITTI training images are 1242x375; its test images come in these sizes (H, W).
_KITTI_TRAIN_SIZE = (375, 1242)
_KITTI_TEST_SIZES = ((370, 1224), (370, 1226), (376, 1241), (375, 1242))
_SPLIT_IDS = {'training': 0, 'testing': 1}
_PROGRESS_MIN_IMAGES = 10
_PARALLEL_MIN_IMAGES = 32

_MIN_DEPTH = 1e-3          # keeps 1/t finite on the horizon row
_FACADE_MAX_DEPTH = 8.0    # t range searched for facade columns (t > 1 is below the image)
_MARKING_FADE_DEPTH = 0.1  # markings fade out above this t: they would only alias there

_FACADE_COLORS = np.array([
    (0.55, 0.55, 0.55), (0.42, 0.42, 0.44), (0.72, 0.68, 0.60),
    (0.60, 0.36, 0.28), (0.80, 0.79, 0.76), (0.50, 0.45, 0.40),
], np.float32)
_CAR_COLORS = np.array([
    (0.85, 0.85, 0.85), (0.08, 0.08, 0.09), (0.55, 0.56, 0.58),
    (0.60, 0.08, 0.07), (0.12, 0.22, 0.50), (0.30, 0.30, 0.32),
], np.float32)
_GLASS_COLOR = np.array((0.10, 0.12, 0.15), np.float32)
_TYRE_COLOR = np.array((0.04, 0.04, 0.04), np.float32)
_TAIL_LIGHT_COLOR = np.array((0.70, 0.08, 0.08), np.float32)
_WHITE_PAINT = np.array((0.92, 0.92, 0.90), np.float32)
_YELLOW_PAINT = np.array((0.90, 0.75, 0.15), np.float32)


@dataclass(frozen=True)
class _RoadStyle:
    """What tells KITTI's categories apart: road width and lane markings."""
    half_width_m: tuple
    lane_counts: tuple      # lanes across the road; 0 means unmarked
    edge_lines: bool        # solid lines along both road edges (sometimes)
    urban_sides: float      # chance that a side has a kerb and sidewalk
    on_road_cars: int       # at most this many cars driving on the road


_STYLES = {
    'um': _RoadStyle((3.2, 4.2), (2,), True, 1.0, 2),
    'umm': _RoadStyle((5.5, 8.0), (3, 4), True, 1.0, 3),
    'uu': _RoadStyle((2.4, 3.2), (0,), False, 0.3, 1),
}


@dataclass(frozen=True)
class _View:
    """Camera and road centre line of one scene (see the module docstring)."""
    height: int
    width: int
    horizon: float          # row of the horizon
    vanish_x: float         # column of the vanishing point of a straight road
    px_per_m: float         # horizontal pixels per metre at the bottom row
    camera_height_m: float
    near_m: float           # distance of the ground seen by the bottom row
    camera_offset_m: float  # camera position right of the road centre
    bend_px: float          # sideways swing of the road's far end (curvature)

    def depth_of_row(self, rows):
        return (rows - self.horizon) / (self.height - self.horizon)

    def row_of_depth(self, t):
        return self.horizon + t * (self.height - self.horizon)

    def column(self, t, lateral_m):
        """Column of a ground point `lateral_m` right of the road centre at depth t.

        The bend is quadratic in (1 - t) so it vanishes smoothly at the bottom
        row; beyond it (t > 1, only used for facades) the road continues straight.
        """
        near = np.minimum(t, 1.0)
        centre = self.vanish_x + self.bend_px * (1.0 - near) ** 2
        return centre + (lateral_m - self.camera_offset_m) * self.px_per_m * t

    def px_per_m_up(self, t):
        """Vertical pixels per metre of an upright object standing at depth t."""
        return t * (self.height - self.horizon) / self.camera_height_m


@dataclass(frozen=True)
class _Ground:
    """Per-pixel ground-plane coordinates; only meaningful where `visible`."""
    t: np.ndarray         # (H, 1) depth parameter, clipped to >= _MIN_DEPTH
    distance: np.ndarray  # (H, 1) metres
    lateral: np.ndarray   # (H, W) metres right of the road centre
    visible: np.ndarray   # (H, W) below the horizon

    @classmethod
    def of(cls, view):
        rows = np.arange(view.height, dtype=np.float32)[:, None]
        cols = np.arange(view.width, dtype=np.float32)[None, :]
        raw_t = view.depth_of_row(rows)
        t = np.maximum(raw_t, _MIN_DEPTH)
        lateral = (cols - view.column(t, 0.0)) / (view.px_per_m * t)
        visible = np.broadcast_to(raw_t > 0, lateral.shape)
        return cls(t, view.near_m / t, lateral, visible)

    def select(self, at):
        """(lateral, distance, t) at the pixels of boolean mask `at`, as flat arrays."""
        return self.lateral[at], np.broadcast_to(self.distance, at.shape)[at], np.broadcast_to(self.t, at.shape)[at]


@dataclass(frozen=True)
class _Roadside:
    """One side of the road, outward from the road edge."""
    side: int              # -1 left, +1 right
    bands: tuple           # ((surface kind, width m), ...); the last band is infinite
    facade_gap_m: float    # from the outer edge of the paved bands to the building fronts; inf: no buildings

    @property
    def paved_m(self):
        """Width of the finite bands (kerb and sidewalk) next to the road."""
        return sum(width for _, width in self.bands[:-1])

    @property
    def facade_m(self):
        """Distance of the building fronts from the road edge (inf: none)."""
        return self.paved_m + self.facade_gap_m

    @property
    def verge(self):
        return self.bands[-1][0]


@dataclass
class _Canvas:
    rgb: np.ndarray   # (H, W, 3) float32 in [0, 1]
    road: np.ndarray  # (H, W) bool: road surface visible at this pixel

    def paint(self, mask, color, box=(slice(None), slice(None))):
        """Paint `mask` of `box` opaquely, hiding road there.

        `color` is one RGB triple or one per masked pixel (N x 3), so surfaces
        are only computed where they show.
        """
        self.rgb[box][mask] = color
        self.road[box][mask] = False

    def blend(self, alpha, color):
        """Paint translucent `color` with per-pixel `alpha`; the road label is left alone."""
        at = alpha > 0
        weight = alpha[at][:, None]
        self.rgb[at] = self.rgb[at] * (1 - weight) + color * weight


@dataclass(frozen=True)
class _Noise:
    """Per-image texture fields shared by all surfaces (they never overlap)."""
    fine: np.ndarray    # (H, W) white noise
    coarse: np.ndarray  # (H, W) smooth blotches

    @classmethod
    def of(cls, rng, shape):
        return cls(rng.standard_normal(shape, dtype=np.float32), _smooth_noise(rng, shape, max(3, shape[0] // 16)))


@dataclass(frozen=True)
class _Sprite:
    """An upright object standing on the ground; `draw(rng, u, v)` -> (mask, color).

    u and v are 2-D pixel grids over the object's box: u runs from -1 to 1
    across the object, v from 0 (ground) to 1 (top).
    """
    distance_m: float
    lateral_m: float
    width_m: float
    height_m: float
    draw: callable


# ----------------------------------------------------------------------------- validation

def _check_image_shape(image_shape):
    height, width = image_shape
    if height < MIN_SIDE or width < MIN_SIDE:
        raise ValueError('image sides must be at least %d pixels, got image_shape=%r' % (MIN_SIDE, tuple(image_shape)))
    return int(height), int(width)


def _check_count(name, count):
    if count <= 0:
        raise ValueError('%s must be a positive number of images, got %r' % (name, count))


def _check_category(category):
    if category not in CATEGORIES:
        raise ValueError('category must be one of %s, got %r' % (', '.join(CATEGORIES), category))


# ----------------------------------------------------------------------------- helpers

def _upsample_axis(values, axis, size, cell):
    """Linear interpolation of a 2-D array along `axis` between knots `cell` pixels apart."""
    position = np.arange(size, dtype=np.float32) / cell
    knot = position.astype(int)
    weight = np.expand_dims(position - knot, 1 - axis)
    return np.take(values, knot, axis) * (1 - weight) + np.take(values, knot + 1, axis) * weight


def _smooth_noise(rng, shape, cell):
    """Zero-mean noise whose blobs are about `cell` pixels wide (bilinear upsampled random grid).

    Hand-rolled rather than ndimage.zoom (4x slower) or matrix products (whose
    BLAS threads stall when the host process is busy training).
    """
    noise = rng.standard_normal((shape[0] // cell + 2, shape[1] // cell + 2), dtype=np.float32)
    for axis, size in enumerate(shape):
        noise = _upsample_axis(noise, axis, size, cell)
    return noise


def _uniform32(rng, low, high, size):
    return rng.uniform(low, high, size).astype(np.float32)


def _tinted(rng, grey, spread=0.03):
    """An RGB triple near `grey` with a small random colour cast."""
    return np.float32(grey) * (1 + _uniform32(rng, -spread, spread, 3))


def _textured(color, noise, fine, coarse, at):
    """`color` (a triple, or one per selected pixel) with the image's noise, at the pixels of mask `at`."""
    return color * (1 + fine * noise.fine[at] + coarse * noise.coarse[at])[:, None]


# ----------------------------------------------------------------------------- scene layout

def _sample_view(rng, image_shape, style):
    height, width = image_shape
    half_width_m = rng.uniform(*style.half_width_m)
    view = _View(
        height=height, width=width,
        horizon=height * rng.uniform(0.36, 0.48),
        vanish_x=width * rng.uniform(0.4, 0.6),
        px_per_m=width / rng.uniform(12.0, 15.0),
        camera_height_m=rng.uniform(1.5, 1.8),
        near_m=rng.uniform(4.5, 6.0),
        camera_offset_m=half_width_m * rng.uniform(-0.5, 0.5),
        bend_px=width * rng.uniform(-0.08, 0.08),
    )
    return view, half_width_m


def _sample_roadside(rng, side, style):
    """Kerb and sidewalk (urban) or a bare verge; a parking verge always has a kerb.

    Without the kerb a parking area, being asphalt too, would have no visible
    border with the road, and its label would be noise rather than something to learn.
    """
    verge = str(rng.choice(('grass', 'parking', 'dirt'), p=(0.45, 0.35, 0.2)))
    bands = []
    if rng.random() < style.urban_sides:
        bands += [('kerb', rng.uniform(0.15, 0.3)), ('sidewalk', rng.uniform(1.5, 4.0))]
    elif verge == 'parking':
        bands.append(('kerb', rng.uniform(0.15, 0.3)))
    bands.append((verge, np.inf))
    verge_depth_m = rng.uniform(6.0, 10.0) if verge == 'parking' else rng.uniform(1.0, 8.0)
    has_facade = rng.random() < 0.55
    return _Roadside(side, tuple(bands), verge_depth_m if has_facade else np.inf)


# ----------------------------------------------------------------------------- background

def _paint_sky(rng, canvas, view):
    rows = np.arange(view.height, dtype=np.float32)[:, None, None] / view.horizon
    zenith = _tinted(rng, (0.45, 0.60, 0.85) if rng.random() < 0.6 else (0.72, 0.74, 0.78))
    haze = _tinted(rng, (0.86, 0.88, 0.90))
    clouds = 0.05 * _smooth_noise(rng, canvas.road.shape, max(4, view.height // 6))[..., None]
    canvas.rgb[:] = zenith + (haze - zenith) * np.clip(rows, 0, 1) ** 0.7 + clouds


def _paint_skyline(rng, canvas, view, noise):
    """Far buildings and a tree line standing on the horizon."""
    rows = np.arange(view.height)[:, None]
    edges = np.cumsum(rng.uniform(0.03, 0.12, 64) * view.width)
    block = np.searchsorted(edges, np.arange(view.width))
    count = len(edges) + 1
    heights = view.horizon * rng.uniform(0.05, 0.5, count) * (rng.random(count) < 0.75)
    colors = _FACADE_COLORS[rng.integers(len(_FACADE_COLORS), size=count)] * _uniform32(rng, 0.7, 1.1, (count, 1))
    buildings = (rows >= view.horizon - heights[block]) & (rows <= view.horizon + 1)
    building_colors = np.broadcast_to(colors[block], buildings.shape + (3,))[buildings]
    canvas.paint(buildings, _textured(building_colors, noise, 0.04, 0.0, buildings))
    if rng.random() < 0.6:
        canopy = (0.3 * _smooth_noise(rng, (1, view.width), max(3, view.width // 30))[0]
                  + 0.15 * _smooth_noise(rng, (1, view.width), 3)[0])
        top = view.horizon - view.horizon * rng.uniform(0.08, 0.3) * (1 + canopy)
        trees = (rows >= top) & (rows <= view.horizon + 1)
        canvas.paint(trees, _textured(_tinted(rng, (0.16, 0.26, 0.12), 0.2), noise, 0.25, 0.2, trees))


# ----------------------------------------------------------------------------- ground

def _asphalt(rng, ground, noise, at):
    return _textured(_tinted(rng, rng.uniform(0.26, 0.5)), noise, 0.07, 0.07, at)


def _kerb(rng, ground, noise, at):
    return _textured(_tinted(rng, rng.uniform(0.6, 0.8)), noise, 0.05, 0.05, at)


def _grid_lines(coordinate, spacing_m, line_m):
    return np.mod(coordinate, spacing_m) < line_m


def _sidewalk(rng, ground, noise, at):
    """Paving tiles; the grout is only drawn where a tile spans a few pixels."""
    grey = (0.55, 0.40, 0.35) if rng.random() < 0.25 else rng.uniform(0.4, 0.65)
    surface = _textured(_tinted(rng, grey), noise, 0.06, 0.08, at)
    tile_m = rng.uniform(0.3, 0.5)
    lateral, distance, t = ground.select(at)
    grout = (_grid_lines(lateral, tile_m, 0.04) | _grid_lines(distance, tile_m, 0.04)) & (t > 0.35)
    surface[grout] *= 0.75
    return surface


def _parking(rng, ground, noise, at):
    """Road-like grey asphalt with painted bay lines: not road in KITTI."""
    surface = _textured(_tinted(rng, rng.uniform(0.28, 0.55)), noise, 0.07, 0.12, at)
    _, distance, t = ground.select(at)
    bays = _grid_lines(distance + rng.uniform(0, 3), rng.uniform(2.4, 3.0), 0.15) & (t > 0.25)
    surface[bays] = _WHITE_PAINT * 0.8
    return surface


def _grass(rng, ground, noise, at):
    return _textured(_tinted(rng, (0.24, 0.40, 0.14), 0.15), noise, 0.18, 0.25, at)


def _dirt(rng, ground, noise, at):
    return _textured(_tinted(rng, (0.45, 0.38, 0.28), 0.1), noise, 0.12, 0.2, at)


_SURFACES = {'kerb': _kerb, 'sidewalk': _sidewalk, 'parking': _parking, 'grass': _grass, 'dirt': _dirt}


def _paint_ground(rng, canvas, ground, noise, half_width_m, roadsides):
    canvas.rgb[ground.visible] = _asphalt(rng, ground, noise, ground.visible)
    canvas.road[:] = ground.visible & (np.abs(ground.lateral) <= half_width_m)
    for roadside in roadsides:
        outward = roadside.side * ground.lateral - half_width_m
        start = 0.0
        for kind, width in roadside.bands:
            band = ground.visible & (outward > start) & (outward <= start + width)
            canvas.paint(band, _SURFACES[kind](rng, ground, noise, band))
            start += width


def _lane_lines(rng, style, lanes, half_width_m):
    """(lateral m, dashed, colour) of each marking line; markings are road in KITTI."""
    if lanes == 0:
        return []
    centre_color = _YELLOW_PAINT if rng.random() < 0.2 else _WHITE_PAINT
    dashed = lanes > 2 or rng.random() < 0.75
    lines = [(half_width_m * (2 * k / lanes - 1), dashed, centre_color) for k in range(1, lanes)]
    if style.edge_lines and rng.random() < 0.7:
        inset = half_width_m - 0.3
        lines += [(-inset, False, _WHITE_PAINT), (inset, False, _WHITE_PAINT)]
    return lines


def _paint_markings(rng, canvas, ground, view, lines):
    if not lines:
        return
    half_line_m = rng.uniform(0.06, 0.09)
    period_m, duty, phase = rng.uniform(9, 12), rng.uniform(0.3, 0.45), rng.random()
    dashes = np.mod(ground.distance / period_m + phase, 1.0) < duty
    fade = np.clip((ground.t - _MARKING_FADE_DEPTH) / _MARKING_FADE_DEPTH, 0, 1) * ground.visible
    wear = rng.uniform(0.6, 1.0)
    px_per_m_here = view.px_per_m * ground.t
    for lateral_m, dashed, color in lines:
        # Pixel coverage of a line of width 2*half_line_m: a soft edge one pixel wide.
        coverage = np.clip((half_line_m - np.abs(ground.lateral - lateral_m)) * px_per_m_here + 0.5, 0, 1)
        canvas.blend(coverage * fade * wear * (dashes if dashed else 1.0), color)


# ----------------------------------------------------------------------------- facades

def _facade_columns(view, roadside, half_width_m):
    """Depth t at which each image column meets the facade plane (0: column misses it)."""
    t_grid = np.linspace(0.0, _FACADE_MAX_DEPTH, 4096)
    lateral_m = roadside.side * (half_width_m + roadside.facade_m)
    # Flipping the sign makes the facade base run left to right on both sides;
    # the running maximum hides the parts a road bend turns behind nearer parts.
    base = np.maximum.accumulate(roadside.side * view.column(t_grid, lateral_m))
    return np.interp(roadside.side * np.arange(view.width), base, t_grid)


def _paint_facade(rng, canvas, view, roadside, half_width_m, noise):
    """Building fronts along the road, split into blocks of random length and height."""
    t = _facade_columns(view, roadside, half_width_m)
    distance = view.near_m / np.maximum(t, _MIN_DEPTH)
    edges = rng.uniform(0, 10) + np.cumsum(rng.uniform(6, 25, 48))
    block = np.searchsorted(edges, distance)
    count = len(edges) + 1
    present = rng.random(count) < 0.8
    heights = rng.uniform(4, 16, count)
    colors = _FACADE_COLORS[rng.integers(len(_FACADE_COLORS), size=count)] * _uniform32(rng, 0.75, 1.15, (count, 1))
    rows = np.arange(view.height)[:, None]
    up_m = (view.row_of_depth(t) - rows) / np.maximum(view.px_per_m_up(t), _MIN_DEPTH)
    wall = present[block] & (t > 0.01) & (up_m >= 0) & (up_m <= heights[block])
    along_m, up_m = np.broadcast_to(distance, wall.shape)[wall], up_m[wall]
    window_m, floor_m = rng.uniform(2.5, 4.0), rng.uniform(3.0, 3.5)
    windows = ((np.mod(along_m / window_m, 1) > 0.3) & (np.mod(along_m / window_m, 1) < 0.75)
               & (np.mod(up_m / floor_m, 1) > 0.35) & (np.mod(up_m / floor_m, 1) < 0.8) & (up_m > 1.0))
    wall_colors = np.broadcast_to(colors[block], wall.shape + (3,))[wall] * rng.uniform(0.75, 1.05)
    surface = _textured(wall_colors, noise, 0.05, 0.08, wall)
    surface[windows] = _GLASS_COLOR * (1 + 0.3 * noise.coarse[wall][windows, None])
    canvas.paint(wall, surface)


# ----------------------------------------------------------------------------- objects

def _car_pixels(rng, u, v, body):
    """A car seen from behind: body, tapering cabin with glass, tail lights, tyres."""
    au = np.abs(u)
    cabin_half = 0.85 - 0.25 * (v - 0.55) / 0.45
    mask = (au <= 1) & (v >= 0) & (v <= 1) & ((v < 0.55) | (au <= cabin_half))
    color = body * (0.8 + 0.3 * v)[..., None]
    color[(v > 0.6) & (v < 0.92) & (au < cabin_half - 0.1)] = _GLASS_COLOR
    color[(v > 0.36) & (v < 0.48) & (au > 0.72) & (au < 0.95)] = _TAIL_LIGHT_COLOR
    color[(v > 0.1) & (v < 0.2)] *= 0.5
    color[v < 0.1] = _TYRE_COLOR * 2
    color[(v < 0.16) & (au > 0.55) & (au < 0.95)] = _TYRE_COLOR
    return mask, color


def _tree_pixels(rng, u, v, crown, trunk, crown_share):
    """A leafy ellipse on a thin trunk; the crown fills the top `crown_share` of the height."""
    radius = crown_share / 2
    ragged = 1 + 0.3 * rng.standard_normal(u.shape, dtype=np.float32)
    leaves = u ** 2 + ((v - 1 + radius) / radius) ** 2 <= ragged
    stem = (np.abs(u) < 0.08) & (v >= 0) & (v < 1 - radius)
    color = crown * (0.6 + 0.8 * rng.random(leaves.shape, dtype=np.float32))[..., None]
    color[stem & ~leaves] = trunk
    return leaves | stem, color


def _pole_pixels(rng, u, v, metal):
    mask = (np.abs(u) <= 1) & (v >= 0) & (v <= 1)
    return mask, metal * (1 - 0.4 * u ** 2)[..., None]


def _spaced_distances(rng, first_range, gap_range, stop_m):
    distances = [rng.uniform(*first_range)]
    while distances[-1] < stop_m:
        distances.append(distances[-1] + rng.uniform(*gap_range))
    return distances[:-1]


def _roadside_sprites(rng, roadside, half_width_m):
    """Trees and poles along the sidewalk or verge, and cars parked on a parking verge."""
    sprites = []
    outer_m = min(roadside.facade_m - 1.0, roadside.paved_m + 3.0)
    if rng.random() < 0.5:
        crown, trunk = _tinted(rng, (0.15, 0.30, 0.10), 0.2), _tinted(rng, (0.30, 0.22, 0.15))
        for distance in _spaced_distances(rng, (6, 15), (8, 15), 80):
            lateral = roadside.side * (half_width_m + rng.uniform(0.5, max(0.6, outer_m)))
            size = rng.uniform(2.5, 5.0)
            draw = partial(_tree_pixels, crown=crown, trunk=trunk, crown_share=rng.uniform(0.5, 0.7))
            sprites.append(_Sprite(distance, lateral, size, size * rng.uniform(1.4, 2.2), draw))
    if rng.random() < 0.5:
        metal = _tinted(rng, rng.uniform(0.3, 0.6))
        for distance in _spaced_distances(rng, (7, 20), (25, 40), 120):
            lateral = roadside.side * (half_width_m + 0.5)
            sprites.append(_Sprite(distance, lateral, 0.22, rng.uniform(6, 9), partial(_pole_pixels, metal=metal)))
    if roadside.verge == 'parking' and rng.random() < 0.7:
        for distance in _spaced_distances(rng, (6, 25), (2.8, 6), 60):
            lateral = roadside.side * (half_width_m + roadside.paved_m + rng.uniform(1.5, 5.0))
            sprites.append(_car_sprite(rng, distance, lateral))
    return sprites


def _car_sprite(rng, distance, lateral):
    body = _CAR_COLORS[rng.integers(len(_CAR_COLORS))] * rng.uniform(0.85, 1.15)
    return _Sprite(distance, lateral, rng.uniform(1.7, 1.9), rng.uniform(1.4, 1.6), partial(_car_pixels, body=body))


def _road_cars(rng, style, lanes, half_width_m):
    """Cars driving in the lanes and, on unmarked roads, parked at the road edge."""
    driving_lanes = max(2, lanes)
    lane_width = 2 * half_width_m / driving_lanes
    sprites = []
    for _ in range(rng.integers(0, style.on_road_cars + 1)):
        lane_centre = -half_width_m + lane_width * (rng.integers(driving_lanes) + 0.5)
        sprites.append(_car_sprite(rng, rng.uniform(9, 60), lane_centre + rng.uniform(-0.3, 0.3)))
    if lanes == 0 and rng.random() < 0.5:
        side = rng.choice((-1, 1))
        for distance in _spaced_distances(rng, (8, 20), (5, 9), 50):
            sprites.append(_car_sprite(rng, distance, side * (half_width_m - 0.8)))
    return sprites


def _paint_sprite(rng, canvas, view, sprite):
    t = view.near_m / sprite.distance_m
    centre_x, base_row = view.column(t, sprite.lateral_m), view.row_of_depth(t)
    half_width = 0.5 * sprite.width_m * view.px_per_m * t
    height = sprite.height_m * view.px_per_m_up(t)
    x0, x1 = max(0, int(np.floor(centre_x - half_width))), min(view.width, int(np.ceil(centre_x + half_width)) + 1)
    y0, y1 = max(0, int(np.floor(base_row - height))), min(view.height, int(np.floor(base_row)) + 1)
    if half_width < 0.5 or x0 >= x1 or y0 >= y1:
        return
    u, v = np.meshgrid((np.arange(x0, x1, dtype=np.float32) - centre_x) / half_width,
                       (base_row - np.arange(y0, y1, dtype=np.float32)) / height)
    mask, color = sprite.draw(rng, u, v)
    canvas.paint(mask, color[mask], (slice(y0, y1), slice(x0, x1)))


# ----------------------------------------------------------------------------- light and camera

def _cast_shadows(rng, canvas, view, ground):
    """Soft blotchy shadows (trees) and a straight-edged one (a building) on the ground."""
    below_horizon = (np.arange(view.height) > view.horizon)[:, None]
    shade = np.zeros(canvas.road.shape, np.float32)
    if rng.random() < 0.7:
        blotches = _smooth_noise(rng, canvas.road.shape, max(4, view.height // 5))
        shade += np.clip((blotches - rng.uniform(0.2, 0.9)) * 4, 0, 1) * below_horizon
    if rng.random() < 0.35:
        side, edge_m, slope = rng.choice((-1, 1)), rng.uniform(-3, 3), rng.uniform(-0.3, 0.3)
        shade += ground.visible & (side * ground.lateral > edge_m + slope * ground.distance)
    canvas.rgb *= 1 - rng.uniform(0.3, 0.55) * np.clip(shade, 0, 1)[..., None]


def _develop(rng, rgb):
    """Exposure, contrast, colour balance, lens blur and sensor noise -> uint8."""
    rgb = rgb * rng.uniform(0.75, 1.25) * (1 + _uniform32(rng, -0.04, 0.04, 3))
    mean = rgb.mean()
    rgb = (rgb - mean) * rng.uniform(0.8, 1.2) + mean
    blur = rng.uniform(0.4, 0.8)
    rgb = ndimage.gaussian_filter(rgb, sigma=(blur, blur, 0))
    rgb += rng.uniform(0.005, 0.02) * rng.standard_normal(rgb.shape, dtype=np.float32)
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def _label_image(rng, road):
    """KITTI colours; half the labels mark a thin bottom band (ego bonnet) as don't-care."""
    label = np.where(road[..., None], np.uint8(ROAD_COLOR), np.uint8(NOT_ROAD_COLOR)).astype(np.uint8)
    if rng.random() < 0.5:
        label[-rng.integers(1, max(1, road.shape[0] // 60) + 1):] = DONT_CARE_COLOR
    return label


# ----------------------------------------------------------------------------- public API

def render_scene(rng, image_shape=DEFAULT_IMAGE_SHAPE, category='um'):
    """One synthetic scene: (image uint8 HxWx3, label uint8 HxWx3 in KITTI colours).

    Pure function of the generator state: no I/O, same rng state -> same arrays.
    """
    image_shape = _check_image_shape(image_shape)
    _check_category(category)
    style = _STYLES[category]
    view, half_width_m = _sample_view(rng, image_shape, style)
    lanes = int(rng.choice(style.lane_counts))
    ground = _Ground.of(view)
    noise = _Noise.of(rng, image_shape)
    roadsides = [_sample_roadside(rng, side, style) for side in (-1, 1)]
    canvas = _Canvas(np.zeros(image_shape + (3,), np.float32), np.zeros(image_shape, bool))

    _paint_sky(rng, canvas, view)
    _paint_skyline(rng, canvas, view, noise)
    _paint_ground(rng, canvas, ground, noise, half_width_m, roadsides)
    _paint_markings(rng, canvas, ground, view, _lane_lines(rng, style, lanes, half_width_m))
    for roadside in roadsides:
        if np.isfinite(roadside.facade_m):
            _paint_facade(rng, canvas, view, roadside, half_width_m, noise)
    sprites = _road_cars(rng, style, lanes, half_width_m)
    for roadside in roadsides:
        sprites += _roadside_sprites(rng, roadside, half_width_m)
    for sprite in sorted(sprites, key=lambda s: -s.distance_m):  # painter's order: far to near
        _paint_sprite(rng, canvas, view, sprite)
    _cast_shadows(rng, canvas, view, ground)
    return _develop(rng, canvas.rgb), _label_image(rng, canvas.road)


def kitti_test_shapes(image_shape=DEFAULT_IMAGE_SHAPE):
    """Test-image shapes (H, W): KITTI's four test sizes scaled like `image_shape` is.

    For the default (188, 621) these are (185, 612), (185, 613), (189, 620), (188, 621).
    """
    height, width = _check_image_shape(image_shape)
    kitti_height, kitti_width = _KITTI_TRAIN_SIZE
    return [(max(MIN_SIDE, round(height * h / kitti_height)), max(MIN_SIDE, round(width * w / kitti_width)))
            for h, w in _KITTI_TEST_SIZES]


def _scene_jobs(n_train, n_test, image_shape):
    """(split, index, shape) of every image; test images cycle over the KITTI test sizes."""
    test_shapes = kitti_test_shapes(image_shape)
    jobs = [('training', i, image_shape) for i in range(n_train)]
    return jobs + [('testing', i, test_shapes[i % len(test_shapes)]) for i in range(n_test)]


def _write_png(path, image):
    # Light compression: the noisy images barely shrink at higher levels and
    # the default level doubles the generation time.
    iio.imwrite(path, image, extension='.png', compress_level=1)


def _write_scene(job):
    split_dir, split, index, image_shape, seed = job
    category, number = CATEGORIES[index % len(CATEGORIES)], index // len(CATEGORIES)
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
    image, label = render_scene(rng, image_shape, category)
    _write_png(os.path.join(split_dir, split, 'image_2', '%s_%06d.png' % (category, number)), image)
    if split == 'training':
        _write_png(os.path.join(split_dir, split, 'gt_image_2', '%s_road_%06d.png' % (category, number)), label)


def generate_dataset(root, n_train=120, n_test=12, image_shape=DEFAULT_IMAGE_SHAPE, seed=0):
    """Write a synthetic KITTI Road dataset to `<root>/data_road` and return that path.

    The folder appears complete or not at all (atomic.folder). Scenes are rendered by one process per
    core; file contents depend only on the arguments (byte-identical on a rerun).
    """
    _check_count('n_train', n_train)
    _check_count('n_test', n_test)
    image_shape = _check_image_shape(image_shape)
    final_dir = os.path.join(root, 'data_road')
    if os.path.exists(final_dir):
        raise FileExistsError('%s already exists: remove it to regenerate, or use ensure_dataset() to reuse it'
                              % final_dir)
    with atomic.folder(final_dir) as staging:
        for sub in ('training/image_2', 'training/gt_image_2', 'testing/image_2'):
            os.makedirs(os.path.join(staging, sub))
        jobs = [(staging, split, index, shape, seed) for split, index, shape in
                _scene_jobs(n_train, n_test, image_shape)]
        for _ in tqdm(_run_all(_write_scene, jobs), total=len(jobs), desc='roadgen', unit='img',
                      disable=len(jobs) < _PROGRESS_MIN_IMAGES):
            pass
    return final_dir


def _run_all(function, jobs):
    """function(job) for every job: in one process per core when there are enough jobs to pay for them."""
    if len(jobs) < _PARALLEL_MIN_IMAGES:
        return map(function, jobs)
    return _in_processes(function, jobs)


def _in_processes(function, jobs):
    with concurrent.futures.ProcessPoolExecutor(min(os.cpu_count() or 1, 8)) as pool:
        yield from pool.map(function, jobs, chunksize=4)


def ensure_dataset(root, **kwargs):
    """`<root>/data_road`, generated with `generate_dataset(root, **kwargs)` only if absent."""
    final_dir = os.path.join(root, 'data_road')
    return final_dir if os.path.isdir(final_dir) else generate_dataset(root, **kwargs)


def main(argv=None):
    parser = argparse.ArgumentParser(description='Write a synthetic KITTI Road dataset to OUT_DIR/data_road.')
    parser.add_argument('out_dir', metavar='OUT_DIR')
    parser.add_argument('--train', type=int, default=120, help='training images (default 120)')
    parser.add_argument('--test', type=int, default=12, help='test images (default 12)')
    parser.add_argument('--height', type=int, default=DEFAULT_IMAGE_SHAPE[0])
    parser.add_argument('--width', type=int, default=DEFAULT_IMAGE_SHAPE[1])
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        path = generate_dataset(args.out_dir, args.train, args.test, (args.height, args.width), args.seed)
    except (ValueError, FileExistsError) as error:
        parser.error(str(error))
    print('roadgen: %d training + %d test images (%dx%d, seed %d) in %s, %.1f s'
          % (args.train, args.test, args.height, args.width, args.seed, path, time.perf_counter() - start))


if __name__ == '__main__':
    main()
