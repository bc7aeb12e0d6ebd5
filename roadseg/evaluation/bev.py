"""The KITTI road benchmark's bird's-eye view (BEV): perspective images, labels and road probabilities carried onto
the metric grid of the road plane (config.BEV_*), where the benchmark scores and takes its submissions.

The geometry is the devkit's (devkit_road/python/BirdsEyeView.py, read for its facts): each image's calibration
file gives the homography from road-plane points (x, z, 1) to image points, the columns x, z and translation of
P2 @ R0_rect @ inv(Tr_cam_to_road), with R0_rect and Tr_cam_to_road padded to 4x4. Every cell takes the value of
the pixel its centre projects to; the devkit reads projected coordinates as 1-based, so a cell is inside an H x W
image when 1 <= u <= W and 1 <= v <= H, and takes pixel (floor(v) - 1, floor(u) - 1). Cells outside the image
(or behind the camera) hold no value: they are not evaluated, and a submission writes 0 there as the devkit does.
The cell centres are computed in float64 (the devkit rounds them to float32 first: a cell whose centre falls
within a millionth of a pixel of a pixel's edge may take the neighbouring pixel there).
"""
import os

import numpy as np

from roadseg import config
from roadseg.errors import DatasetError
from roadseg.evaluation import road_metrics

CALIBRATION_FOLDER = 'calib'
CALIBRATION_EXTENSION = '.txt'
# The keys the BEV needs, and their shapes in the file (rows, columns).
CALIBRATION_SHAPES = {'P2': (3, 4), 'R0_rect': (3, 3), 'Tr_cam_to_road': (3, 4)}


def calibration_path(image_path):
    """Where the KITTI layout keeps the calibration of an image or label: <split>/calib/<category>_<number>.txt
    beside <split>/image_2/ (a road label um_road_000000.png has the calibration um_000000.txt)."""
    split = os.path.dirname(os.path.dirname(os.path.abspath(image_path)))
    stem = os.path.splitext(os.path.basename(image_path))[0].replace('_road_', '_', 1)
    return os.path.join(split, CALIBRATION_FOLDER, stem + CALIBRATION_EXTENSION)


def read_calibration(path):
    """{key: matrix} of the keys the BEV needs from a KITTI calibration file ('key: v1 v2 ...' lines); DatasetError
    naming the file when it cannot be read or lacks one of them."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError('cannot read the calibration file %s (%s)' % (path, error)) from error
    values = {}
    for line in lines:
        key, colon, numbers = line.partition(':')
        if colon and key.strip() in CALIBRATION_SHAPES:
            try:
                values[key.strip()] = np.array(numbers.split(), np.float64)
            except ValueError as error:
                raise DatasetError('%s: the %s line holds something that is not a number' % (path, key.strip())) \
                    from error
    matrices = {}
    for key, shape in CALIBRATION_SHAPES.items():
        if key not in values or values[key].size != shape[0] * shape[1]:
            raise DatasetError('%s is not a KITTI road calibration file: it needs a %s line of %d numbers; give '
                               'the calib/ file of the image from data_road.zip' % (path, key, shape[0] * shape[1]))
        matrices[key] = values[key].reshape(shape)
    return matrices


def _padded(matrix):
    """A 3x3 or 3x4 matrix as 4x4, with the bottom row (0, 0, 0, 1)."""
    padded = np.eye(4)
    padded[:matrix.shape[0], :matrix.shape[1]] = matrix
    return padded


def road_homography(calibration):
    """The 3x3 homography from road-plane points (x, z, 1) to image points (u w, v w, w)."""
    to_image = calibration['P2'] @ _padded(calibration['R0_rect']) @ np.linalg.inv(
        _padded(calibration['Tr_cam_to_road']))
    return to_image[:, [0, 2, 3]]


def cell_centres():
    """(x, z) of every cell's centre, each BEV_SHAPE: x grows along a row, z falls down the rows (the farthest row
    first, as the devkit's images show the road ahead going up)."""
    (x_min, _), (_, z_max), step = config.BEV_X_RANGE, config.BEV_Z_RANGE, config.BEV_RESOLUTION
    rows, columns = config.BEV_SHAPE
    return np.meshgrid(x_min + (np.arange(columns) + 0.5) * step, z_max - (np.arange(rows) + 0.5) * step)


class BevMapping:
    """Which pixel of an image of `image_shape` (H, W) each BEV cell takes its value from, for one homography.

    `inside`: BEV_SHAPE bool, the cells that project into the image; `rows`, `columns`: their pixels.
    """

    def __init__(self, homography, image_shape):
        x, z = cell_centres()
        projected = np.tensordot(homography, np.stack([x, z, np.ones_like(x)]), axes=1)
        depth = projected[2]
        with np.errstate(divide='ignore', invalid='ignore'):
            u, v = projected[0] / depth, projected[1] / depth
        height, width = image_shape[:2]
        self.inside = (depth > 0) & (u >= 1) & (u <= width) & (v >= 1) & (v <= height)
        self.rows = np.floor(v[self.inside]).astype(np.intp) - 1
        self.columns = np.floor(u[self.inside]).astype(np.intp) - 1

    @classmethod
    def of_image(cls, image_path, image_shape):
        """The mapping of the image at `image_path` (its calibration_path file) at its size."""
        return cls(road_homography(read_calibration(calibration_path(image_path))), image_shape)

    def __call__(self, image, outside=0):
        """An HxW (or HxWxC) array onto the grid: BEV_SHAPE (+ C), `outside` in the cells outside the image."""
        bev = np.full(config.BEV_SHAPE + image.shape[2:], outside, image.dtype)
        bev[self.inside] = image[self.rows, self.columns]
        return bev


def missing_calibrations(image_paths):
    """The images of `image_paths` whose calibration file (calibration_path) does not exist."""
    return [path for path in image_paths if not os.path.isfile(calibration_path(path))]


def describe_missing(missing, shown=3):
    """'um_000001.png, um_000002.png (and 5 more)': the names of images without calibration, for one line."""
    names = [os.path.basename(path) for path in sorted(missing)]
    return ', '.join(names[:shown]) + (' (and %d more)' % (len(names) - shown) if len(names) > shown else '')


class BevScores:
    """The road measures in the bird's-eye view of those of `image_paths` that have calibration files
    (scoring.evaluate feeds it); `missing` are the others."""

    def __init__(self, image_paths):
        self.missing = set(missing_calibrations(image_paths))
        self.scored = len(set(image_paths) - self.missing)
        self.metrics = road_metrics.RoadMetrics()

    def update(self, path, road_probability, road, labelled, category=None):
        """Add one image's perspective road probability and label (HxW each), mapped onto the grid; cells outside
        the image and don't-care pixels are not counted."""
        if path in self.missing:
            return
        mapping = BevMapping.of_image(path, road_probability.shape)
        self.metrics.update(mapping(road_probability), mapping(road), mapping(labelled, outside=False), category,
                            name=path)
