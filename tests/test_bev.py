"""The KITTI benchmark's bird's-eye view: the geometry on a calibration whose answer is known by hand, the real
calibration of a KITTI image, scoring in the BEV, and evaluate --bev and infer --bev."""
import os

import imageio.v3 as iio
import numpy as np
import pytest

from roadseg import config
from roadseg.data import datasets, images
from roadseg.evaluation import bev, scoring
from tests.helpers import SHARED_DATA, run_main, write_calibration, write_png

# A camera 1.5 m above a flat road, looking straight ahead: focal length 600 px, principal point (300.5, 50) in the
# devkit's 1-based pixel coordinates, a 210 x 601 image. A road point (x, 0, z) is seen at u = 300.5 + 600 x / z,
# v = 50 + 900 / z: the rows v = 200 and v = 150 are the road 6 m and 9 m ahead.
FOCAL, HEIGHT, CX, CY = 600.0, 1.5, 300.5, 50.0
IMAGE_SHAPE = (210, 601)
HAND_P2 = np.array([[FOCAL, 0, CX, 0], [0, FOCAL, CY, 0], [0, 0, 1, 0]])
HAND_TR_CAM_TO_ROAD = np.hstack([np.eye(3), [[0], [-HEIGHT], [0]]])  # the road plane 1.5 m below the camera
# The road: 2 m wide (|x| < 1), from 6 to 9 m ahead.
HALF_WIDTH, NEAR, FAR = 1.0, 6.0, 9.0

SAMPLE = os.path.join(SHARED_DATA, 'kitti_road_sample')
TRAINING = os.path.join(SAMPLE, 'data_road', 'training')
needs_sample = pytest.mark.skipif(not os.path.isdir(TRAINING),
                                  reason='../shared/data/kitti_road_sample is absent: real KITTI calibration skipped')


def hand_trapezoid():
    """The road's image, pixel by pixel (each pixel at its centre, 1-based): the rows between the far and near
    edge, and in each row the columns within the road's half width, which grows linearly from the horizon down."""
    rows, columns = np.mgrid[0:IMAGE_SHAPE[0], 0:IMAGE_SHAPE[1]]
    u, v = columns + 1.5, rows + 1.5
    return ((v >= CY + FOCAL * HEIGHT / FAR) & (v < CY + FOCAL * HEIGHT / NEAR)
            & (np.abs(u - CX) < HALF_WIDTH / HEIGHT * (v - CY)))


def hand_mapping():
    return bev.BevMapping(bev.road_homography({'P2': HAND_P2, 'R0_rect': np.eye(3),
                                               'Tr_cam_to_road': HAND_TR_CAM_TO_ROAD}), IMAGE_SHAPE)


def test_the_grid_is_the_benchmarks():
    x, z = bev.cell_centres()
    assert x.shape == config.BEV_SHAPE == (800, 400)
    assert (x[0, 0], x[0, -1], z[0, 0], z[-1, 0]) == pytest.approx((-9.975, 9.975, 45.975, 6.025))


def test_a_road_trapezoid_seen_by_a_hand_built_camera_is_a_rectangle_from_above():
    mapping = hand_mapping()
    x, z = bev.cell_centres()
    road = mapping(hand_trapezoid())
    expected = (np.abs(x) < HALF_WIDTH) & (z > NEAR) & (z < FAR)
    assert expected.sum() == 40 * 60
    assert np.array_equal(road, expected)
    # Inside the image: the cells whose centre projects within it; the others are not evaluated.
    u, v = CX + FOCAL * x / z, CY + FOCAL * HEIGHT / z
    assert np.array_equal(mapping.inside, (u >= 1) & (u <= IMAGE_SHAPE[1]) & (v >= 1) & (v <= IMAGE_SHAPE[0]))
    assert not mapping.inside.all() and mapping.inside[:, 200].all(), 'the sides leave the image, the middle not'


class LabelModel:
    """A model whose road probability is the hand-built road (and, with `sky_road`, the sky too): for scoring."""
    road_class, palette = 1, None

    def __init__(self, sky_road=False):
        road = hand_trapezoid().astype(np.float32)
        if sky_road:
            road[:40] = 1.0  # rows no road cell projects to (the farthest, 46 m ahead, is at v = 69.6)
        self.probabilities = np.stack([1 - road, road], axis=-1)

    def __call__(self, batch):
        return [self.probabilities for _ in batch]


def write_hand_kitti(training):
    """A KITTI training folder of two images (um, uu) whose label is the hand-built road, with their
    calibrations."""
    label = np.zeros(IMAGE_SHAPE + (3,), np.uint8)
    label[:] = datasets.NOT_ROAD_COLOR
    label[hand_trapezoid()] = datasets.ROAD_COLOR
    pairs = []
    for name in ('um_000000', 'uu_000007'):
        image = write_png(os.path.join(training, 'image_2', name + '.png'), np.full(IMAGE_SHAPE + (3,), 90, np.uint8))
        pairs.append((image, write_png(os.path.join(training, 'gt_image_2', name.replace('_', '_road_') + '.png'),
                                       label)))
        write_calibration(os.path.join(training, 'calib', name + '.txt'), HAND_P2, np.eye(3), HAND_TR_CAM_TO_ROAD)
    return pairs


def test_a_model_that_predicts_the_label_scores_maxf_1_in_the_bev_whatever_it_says_off_the_road_plane(tmp_path):
    pairs = write_hand_kitti(str(tmp_path / 'training'))
    assert datasets.kitti_road_pairs(str(tmp_path / 'training')) == pairs
    for sky_road, perspective_maxf in ((False, 1.0), (True, None)):
        scores = bev.BevScores([image for image, _ in pairs])
        metrics, _ = scoring.evaluate(LabelModel(sky_road), pairs, bev_scores=scores)
        result = scores.metrics.result()
        assert (result['maxf'], result['iou'], result['images'], scores.scored) == (1.0, 1.0, 2, 2)
        assert scores.metrics.categories() == ['um', 'uu']
        if perspective_maxf:
            assert metrics.result()['maxf'] == perspective_maxf
        else:
            assert metrics.result()['maxf'] < 0.9, 'the sky painted road counts in perspective, not from above'


def test_a_calibration_file_without_the_bev_keys_is_refused_naming_it(tmp_path):
    path = str(tmp_path / 'um_000000.txt')
    with open(path, 'w') as f:
        f.write('P2: 1 0 0 0 0 1 0 0 0 0 1 0\nR0_rect: 1 0 0 0 1 0 0 0 1\n')
    with pytest.raises(datasets.DatasetError, match='um_000000.txt is not a KITTI road calibration file: it needs a '
                                                    'Tr_cam_to_road line of 12 numbers'):
        bev.read_calibration(path)


@needs_sample
def test_the_real_calibration_of_a_kitti_image_shows_its_road_ahead_and_nothing_above_the_horizon():
    label_path = os.path.join(TRAINING, 'gt_image_2', 'um_road_000000.png')
    assert bev.calibration_path(label_path) == os.path.abspath(os.path.join(TRAINING, 'calib', 'um_000000.txt'))
    homography = bev.road_homography(bev.read_calibration(bev.calibration_path(label_path)))
    onehot = datasets.kitti_label_to_onehot(images.read_rgb(label_path))
    mapping = bev.BevMapping(homography, onehot.shape)
    road, labelled = mapping(onehot[..., 1]), mapping(onehot.any(axis=-1), outside=False)
    x, z = bev.cell_centres()
    horizon = homography[1, 1] / homography[2, 1]  # where the road plane's far end, z -> infinity, is seen
    assert 150 < horizon < 200 and mapping.rows.min() + 1 > horizon, 'every cell is seen below the horizon'
    ahead = (np.abs(x) < 1) & (z > 7) & (z < 10)
    assert mapping.inside[ahead].all() and road[ahead].mean() > 0.9, 'the road just ahead of the car'
    assert 0.15 < road[labelled].mean() < 0.5, 'road, and off-road beside it'
    assert not mapping.inside[-1, 0] and not mapping.inside[-1, -1], 'the near corners are out of view'


@needs_sample
def test_evaluate_bev_on_the_sample_prints_the_benchmark_table_and_says_which_image_has_no_calibration(
        small_trained_run):
    out, stop = run_main(['evaluate', '--model', small_trained_run, '--data-dir', SAMPLE, '--bev', '--json'])
    assert stop is None, stop
    lines = out.splitlines()
    assert ("evaluate: 1 of 2 images have no calibration file in calib/ and are left out of the bird's-eye view: "
            'um_000001.png') in lines
    start = lines.index(next(line for line in lines if line.startswith("evaluate: the same in the KITTI benchmark's "
                                                                       "bird's-eye view")))
    assert lines[start].endswith('on the 1 of those 2 images that have calibration files'), lines[start]
    assert lines[start + 1].split() == ['set', 'images', 'IoU', 'MaxF', 'AP', 'PRE', 'REC', 'FPR', 'FNR', 'thr']
    assert [line.split()[:2] for line in lines[start + 2:start + 4]] == [['URBAN', '1'], ['um', '1']]
    assert '"bev": {' in lines[-1]


def test_infer_bev_writes_the_road_from_above_beside_the_overlay_and_refuses_images_without_calibration(
        small_trained_run, tmp_path):
    (image, _), _ = write_hand_kitti(str(tmp_path / 'training'))
    out = str(tmp_path / 'out')
    _, stop = run_main(['infer', '--model', small_trained_run, image, '--out', out, '--bev'])
    assert stop is None, stop
    assert sorted(os.listdir(out)) == ['um_000000_bev.png', 'um_000000_overlay.png']
    from_above = iio.imread(os.path.join(out, 'um_000000_bev.png'))
    assert from_above.shape == config.BEV_SHAPE and from_above.dtype == np.uint8
    assert not from_above[~hand_mapping().inside].any(), 'cells out of view are 0'
    stray = write_png(str(tmp_path / 'elsewhere' / 'street.png'), np.zeros((40, 60, 3), np.uint8))
    _, stop = run_main(['infer', '--model', small_trained_run, image, stray, '--out', str(tmp_path / 'o2'), '--bev'])
    assert ('--bev needs the calibration file of each image' in stop and '1 of 2 images have none: street.png'
            in stop), stop
