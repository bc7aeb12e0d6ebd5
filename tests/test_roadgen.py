"""Tests of the synthetic KITTI Road generator (roadgen.py), on real files in pytest's temporary folders."""
import os
import re

import imageio.v3 as iio
import numpy as np
import pytest

from roadseg.data import datasets, roadgen

KITTI_COLORS = {datasets.ROAD_COLOR, datasets.NOT_ROAD_COLOR, datasets.DONT_CARE_COLOR}
SMALL_SHAPE = (48, 160)


def _files(folder):
    return sorted(os.listdir(folder))


def _road_mask(label):
    return np.all(label == datasets.ROAD_COLOR, axis=-1)


def _scenes(count, seed=1, image_shape=roadgen.DEFAULT_IMAGE_SHAPE):
    """(category, image, label) of `count` scenes cycling over the categories."""
    for index in range(count):
        category = roadgen.CATEGORIES[index % len(roadgen.CATEGORIES)]
        yield (category,) + roadgen.render_scene(np.random.default_rng([seed, index]), image_shape, category)


def test_files_have_kitti_names_shapes_and_labels(tmp_path):
    root = str(tmp_path)
    shape = (96, 621)  # wide enough that the four KITTI test sizes stay distinct
    data_road = roadgen.generate_dataset(root, n_train=7, n_test=5, image_shape=shape)
    assert data_road == os.path.join(root, 'data_road')
    training, testing = os.path.join(data_road, 'training'), os.path.join(data_road, 'testing')
    assert _files(data_road) == ['testing', 'training']
    assert _files(testing) == ['image_2']
    images = _files(os.path.join(training, 'image_2'))
    assert images == ['um_000000.png', 'um_000001.png', 'um_000002.png', 'umm_000000.png', 'umm_000001.png',
                      'uu_000000.png', 'uu_000001.png']
    assert _files(os.path.join(training, 'gt_image_2')) == [name.replace('_', '_road_') for name in images]
    for name in images:
        image = iio.imread(os.path.join(training, 'image_2', name))
        label = iio.imread(os.path.join(training, 'gt_image_2', name.replace('_', '_road_')))
        assert image.shape == label.shape == shape + (3,) and image.dtype == label.dtype == np.uint8
    tests = _files(os.path.join(testing, 'image_2'))
    assert tests == ['um_000000.png', 'um_000001.png', 'umm_000000.png', 'umm_000001.png', 'uu_000000.png']
    # Written in index order um0, umm0, uu0, um1, umm1: sizes cycle over the KITTI test sizes.
    in_index_order = ['um_000000.png', 'umm_000000.png', 'uu_000000.png', 'um_000001.png', 'umm_000001.png']
    sizes = [iio.imread(os.path.join(testing, 'image_2', name)).shape[:2] for name in in_index_order]
    expected = roadgen.kitti_test_shapes(shape)
    assert sizes == [expected[i % 4] for i in range(5)]
    assert len(set(sizes)) == 4


def test_kitti_test_shapes_follow_kitti_ratios():
    assert roadgen.kitti_test_shapes((375, 1242)) == [(370, 1224), (370, 1226), (376, 1241), (375, 1242)]
    default_shapes = roadgen.kitti_test_shapes()
    assert len(set(default_shapes)) == 4
    assert all(abs(h - 188) <= 3 and abs(w - 621) <= 10 for h, w in default_shapes)


def test_labels_use_only_kitti_colors_with_sane_road_and_small_dont_care():
    dont_care_seen = 0
    for _, image, label in _scenes(24):
        colors = set(map(tuple, np.unique(label.reshape(-1, 3), axis=0)))
        assert colors <= KITTI_COLORS and datasets.ROAD_COLOR in colors and datasets.NOT_ROAD_COLOR in colors
        assert 0.05 <= _road_mask(label).mean() <= 0.45
        dont_care = np.mean(label[..., 0] == 0)
        assert dont_care <= 0.03
        dont_care_seen += dont_care > 0
    assert 0 < dont_care_seen < 24


def test_categories_differ_in_road_width():
    fractions = {category: [] for category in roadgen.CATEGORIES}
    for category, _, label in _scenes(18, image_shape=(94, 310)):
        fractions[category].append(_road_mask(label).mean())
    mean = {category: np.mean(values) for category, values in fractions.items()}
    assert mean['umm'] > mean['um'] > mean['uu'], mean
    assert 0.10 <= np.mean(list(mean.values())) <= 0.35, mean


def test_road_needs_learning_but_is_not_random():
    """One grey-level threshold is a poor road detector, yet road sits low in the image."""
    grey, road = [], []
    for _, image, label in _scenes(12):
        grey.append(image.mean(axis=-1))
        road.append(_road_mask(label))
    grey, road = np.stack(grey), np.stack(road)
    best_iou = 0.0
    for threshold in range(0, 256, 4):
        for predicted in (grey < threshold, grey >= threshold):
            best_iou = max(best_iou, np.sum(predicted & road) / np.sum(predicted | road))
    assert best_iou < 0.6, best_iou
    height = road.shape[1]
    assert road[:, height // 2:].mean() > 0.2
    assert road[:, :height // 3].mean() < 0.02


def test_render_scene_is_pure_and_seeded():
    first = roadgen.render_scene(np.random.default_rng(7), SMALL_SHAPE, 'umm')
    again = roadgen.render_scene(np.random.default_rng(7), SMALL_SHAPE, 'umm')
    other = roadgen.render_scene(np.random.default_rng(8), SMALL_SHAPE, 'umm')
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])


def _dataset_bytes(root, seed):
    data_road = roadgen.generate_dataset(root, n_train=4, n_test=2, image_shape=SMALL_SHAPE, seed=seed)
    contents = {}
    for folder, _, names in os.walk(data_road):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, 'rb') as f:
                contents[os.path.relpath(path, data_road)] = f.read()
    return contents


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path):
    a, b, c = (str(tmp_path / name) for name in 'abc')
    first, again, other = _dataset_bytes(a, seed=3), _dataset_bytes(b, seed=3), _dataset_bytes(c, seed=4)
    assert len(first) == 4 + 4 + 2
    assert first == again
    assert first.keys() == other.keys()
    images = [name for name in first if os.path.basename(os.path.dirname(name)) == 'image_2']
    assert len(images) == 4 + 2 and all(first[name] != other[name] for name in images)


def test_generate_is_atomic_and_ensure_reuses(tmp_path):
    root = str(tmp_path)
    data_road = roadgen.ensure_dataset(root, n_train=3, n_test=1, image_shape=SMALL_SHAPE)
    assert _files(root) == ['data_road']  # no temporary directory left behind
    label = os.path.join(data_road, 'training', 'gt_image_2', 'um_road_000000.png')
    stamps = os.stat(data_road).st_mtime_ns, os.stat(label).st_mtime_ns
    with pytest.raises(FileExistsError, match=re.escape(data_road)):
        roadgen.generate_dataset(root, n_train=3, n_test=1, image_shape=SMALL_SHAPE)
    assert roadgen.ensure_dataset(root, n_train=3, n_test=1, image_shape=SMALL_SHAPE) == data_road
    assert (os.stat(data_road).st_mtime_ns, os.stat(label).st_mtime_ns) == stamps


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    real_imwrite, written = roadgen.iio.imwrite, []

    def failing_imwrite(path, image, **kwargs):
        if len(written) == 3:
            raise KeyboardInterrupt('simulated interruption')
        written.append(path)
        return real_imwrite(path, image, **kwargs)

    root = str(tmp_path)
    with monkeypatch.context() as patched:
        patched.setattr(roadgen.iio, 'imwrite', failing_imwrite)
        with pytest.raises(KeyboardInterrupt):
            roadgen.generate_dataset(root, n_train=6, n_test=1, image_shape=SMALL_SHAPE)
    assert len(written) == 3
    assert _files(root) == []


def test_bad_arguments_raise_value_error(tmp_path):
    root = str(tmp_path)
    with pytest.raises(ValueError, match='n_train'):
        roadgen.generate_dataset(root, n_train=0)
    with pytest.raises(ValueError, match='n_test'):
        roadgen.generate_dataset(root, n_test=-1)
    with pytest.raises(ValueError, match='32'):
        roadgen.generate_dataset(root, image_shape=(31, 200))
    with pytest.raises(ValueError, match='32'):
        roadgen.generate_dataset(root, image_shape=(100, 16))
    assert _files(root) == []
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match='category'):
        roadgen.render_scene(rng, SMALL_SHAPE, 'highway')
    with pytest.raises(ValueError, match='32'):
        roadgen.render_scene(rng, (20, 20), 'um')


def test_command_line_writes_dataset_and_prints_summary(tmp_path, capsys):
    root = str(tmp_path)
    roadgen.main([root, '--train', '3', '--test', '2', '--height', '40', '--width', '120', '--seed', '5'])
    summary = capsys.readouterr().out.strip()
    assert '\n' not in summary and '3 training + 2 test images' in summary and '40x120' in summary
    image = iio.imread(os.path.join(root, 'data_road', 'training', 'image_2', 'uu_000000.png'))
    assert image.shape == (40, 120, 3)
    with pytest.raises(SystemExit):
        roadgen.main([root, '--train', '3'])
    assert 'already exists' in capsys.readouterr().err
