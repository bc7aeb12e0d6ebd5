"""Cityscapes: the official layout on a small generated copy, the labelIds -> trainIds mapping pixel for pixel,
the layout's errors in one line, and a short training and evaluation through main.py.

The generated dataset has Cityscapes' folders and file names (two cities per split, the four gtFine files of
each frame, dummy test labels as the official package has them) and labelIds that include the ignored ids
and rare ones. One val label is hand-made: its expected trainIds below are typed out, not computed.
"""
import contextlib
import csv
import io
import json
import os
import shutil

import imageio.v3 as iio
import numpy as np
import pytest

from roadseg import cli, config
from roadseg.data import batches, cityscapes, cityscapes_labels, datasets, splits
from roadseg.errors import DatasetError
from roadseg.evaluation import road_metrics, scoring
from tests.helpers import run_main, write_png

CITIES = {'train': {'aachen': 4, 'ulm': 2}, 'val': {'frankfurt': 2, 'munster': 2}, 'test': {'berlin': 2, 'bonn': 2}}
IMAGE_SHAPE = (64, 128)
NETWORK_SHAPE = (32, 64)
VAL_CITY = ('--val-cities', 'ulm')  # the generated train split has aachen and ulm
CLASSES = 19

# The hand-made label: one block per labelId 0..33, and a car (26) whose license plate (id -1 in labels.py)
# official labelIds images do not draw, so the plate's pixels are the car's.
HAND_IDS = np.array([[0, 1, 2, 3, 4, 5, 6],
                     [7, 8, 9, 10, 11, 12, 13],
                     [14, 15, 16, 17, 18, 19, 20],
                     [21, 22, 23, 24, 25, 26, 27],
                     [28, 29, 30, 31, 32, 33, 26]], np.uint8)
I = 255  # noqa: E741 (ignored)
HAND_TRAIN_IDS = np.array([[I, I, I, I, I, I, I],
                           [0, 1, I, I, 2, 3, 4],
                           [I, I, I, 5, I, 6, 7],
                           [8, 9, 10, 11, 12, 13, 14],
                           [15, I, I, 16, 17, 18, 13]])
HAND_BLOCK = (8, 16)  # each id fills 8x16 pixels; the rest of the 64x128 label is road (7 -> 0)
HAND_LABEL = ('val', 'frankfurt', 'frankfurt_000000_000019')


def _hand_made(grid, fill):
    full = np.full(IMAGE_SHAPE, fill, np.uint8)
    block = np.kron(grid, np.ones(HAND_BLOCK, np.uint8))
    full[:block.shape[0], :block.shape[1]] = block
    return full


# --------------------------------------------------------------------------- the generated dataset

def street_label_ids(rng, shape):
    """A street-like labelIds image: sky, buildings, trees, sidewalk, road, a car, a pole with a sign, a person,
    the ego vehicle and the rectification border, and a few rare ids (evaluated or ignored)."""
    height, width = shape
    ids = np.zeros(shape, np.uint8)
    horizon = int(height * rng.uniform(0.4, 0.55))
    ids[:horizon // 2] = 23
    ids[horizon // 2:horizon] = 11
    ids[horizon // 2:horizon, int(width * rng.uniform(0.6, 0.8)):] = 21
    ids[horizon:] = 7
    ids[horizon:, :width // 5] = 8
    car = int(width * rng.uniform(0.3, 0.6))
    ids[horizon + 2:horizon + 12, car:car + 24] = 26
    ids[horizon - 10:horizon + 6, width // 4:width // 4 + 2] = 17
    ids[horizon - 14:horizon - 10, width // 4 - 2:width // 4 + 4] = 20
    ids[horizon - 4:horizon + 8, car - 8:car - 4] = 24
    ids[horizon:horizon + 4, width - 20:width - 8] = 22
    ids[0:3, 0:6] = 3
    ids[horizon - 3:horizon, width // 2:width // 2 + 6] = rng.choice([4, 5, 6])
    rare = rng.choice([9, 10, 14, 15, 16, 18, 29, 30]), rng.choice([12, 13, 19, 25, 27, 28, 31, 32, 33])
    ids[horizon + 14:horizon + 20, 30:44] = rare[0]
    ids[horizon - 8:horizon - 2, 60:70] = rare[1]
    ids[-4:] = 1
    ids[:, :1] = ids[:, -1:] = 2
    return ids


def image_of(ids, rng):
    """An RGB image whose colour at each pixel tells its label id, plus noise: a network can learn it."""
    colours = np.random.default_rng(42).integers(30, 226, size=(256, 3))
    noise = rng.normal(0, 8, ids.shape + (3,))
    return np.clip(colours[ids] + noise, 0, 255).astype(np.uint8)


def dummy_test_label(shape):
    """What gtFine/test holds: no classes, only the ego vehicle and the rectification border."""
    ids = np.zeros(shape, np.uint8)
    ids[-4:] = 1
    ids[:, :1] = ids[:, -1:] = 2
    return ids


def write_frame(root, split, city, name, ids, image):
    """One frame as Cityscapes ships it: the image, and the labelIds, colour, instance and polygon files."""
    write_png(os.path.join(root, cityscapes.IMAGES, split, city, name + cityscapes.IMAGE_SUFFIX), image)
    labels = os.path.join(root, cityscapes.LABELS, split, city, name + '_gtFine_')
    write_png(labels + 'labelIds.png', ids)
    write_png(labels + 'color.png', np.stack([ids * 7, ids * 3, ids * 5], axis=-1).astype(np.uint8))
    write_png(labels + 'instanceIds.png', ids.astype(np.uint16) * 1000)
    with open(labels + 'polygons.json', 'w') as f:
        json.dump({'imgHeight': ids.shape[0], 'imgWidth': ids.shape[1], 'objects': []}, f)


def write_cityscapes(root, cities=CITIES, shape=IMAGE_SHAPE, seed=0):
    """A Cityscapes-layout dataset in `root`; val's first frame carries the hand-made label (at 64x128)."""
    rng = np.random.default_rng(seed)
    for split, counts in cities.items():
        for city, count in counts.items():
            for seq in range(count):
                name = '%s_%06d_000019' % (city, seq)
                ids = street_label_ids(rng, shape)
                if (split, city, name) == HAND_LABEL and shape == IMAGE_SHAPE:
                    ids = _hand_made(HAND_IDS, 7)
                image = image_of(ids, rng)
                write_frame(root, split, city, name, dummy_test_label(shape) if split == 'test' else ids, image)
    return root


@pytest.fixture(scope='module')
def small_cityscapes(tmp_path_factory):
    """The generated Cityscapes layout (CITIES at 64x128), written once for this file's tests."""
    return write_cityscapes(str(tmp_path_factory.mktemp('cityscapes') / 'cityscapes'))


def _relative(path, root):
    return os.path.relpath(path, root).replace(os.sep, '/')


# --------------------------------------------------------------------------- layout and pairing

def test_pairs_are_matched_by_name_in_the_official_layout(small_cityscapes):
    root = small_cityscapes
    pairs = cityscapes.split_pairs(root, 'train')
    assert [(_relative(image, root), _relative(label, root)) for image, label in pairs] == [
        ('leftImg8bit/train/%s/%s_%06d_000019_leftImg8bit.png' % (city, city, seq),
         'gtFine/train/%s/%s_%06d_000019_gtFine_labelIds.png' % (city, city, seq))
        for city, seq in [('aachen', 0), ('aachen', 1), ('aachen', 2), ('aachen', 3), ('ulm', 0), ('ulm', 1)]]
    # gtFine's colour, instance and polygon files are in the folders and are not taken for labels
    assert len(os.listdir(os.path.join(root, 'gtFine', 'train', 'ulm'))) == 8
    assert [_relative(path, root) for path in cityscapes.images_of_test_split(root)] == [
        'leftImg8bit/test/berlin/berlin_000000_000019_leftImg8bit.png',
        'leftImg8bit/test/berlin/berlin_000001_000019_leftImg8bit.png',
        'leftImg8bit/test/bonn/bonn_000000_000019_leftImg8bit.png',
        'leftImg8bit/test/bonn/bonn_000001_000019_leftImg8bit.png']


def test_labelids_map_to_the_19_train_ids_pixel_for_pixel(small_cityscapes):
    root = small_cityscapes
    split, city, name = HAND_LABEL
    image, label = cityscapes.split_pairs(root, split)[0]
    assert os.path.basename(image) == name + '_leftImg8bit.png' and os.path.basename(label) == name + \
        '_gtFine_labelIds.png', 'the hand-made label is paired with its own image'
    expected = _hand_made(HAND_TRAIN_IDS, 0)
    everything = datasets.read_onehot(label, datasets.label_format('cityscapes', 'all').to_onehot)
    assert everything.shape == IMAGE_SHAPE + (CLASSES,) and everything.dtype == bool
    assert np.array_equal(everything, expected[..., None] == np.arange(CLASSES))
    road = datasets.read_onehot(label, datasets.label_format('cityscapes', 'road').to_onehot)
    assert np.array_equal(road[..., 1], expected == 0), 'road is trainId 0 (labelId 7)'
    assert np.array_equal(road[..., 0], (expected != I) & (expected != 0)), 'not road: the 18 other classes'
    assert not road[expected == I].any(), 'ignored pixels count in neither class'


def test_label_format_names_and_palette_follow_the_train_ids():
    fmt = datasets.label_format('cityscapes', 'all')
    assert fmt.num_classes == CLASSES and fmt.road_class == 0
    assert fmt.class_names[:3] == ('road', 'sidewalk', 'building') and fmt.class_names[-1] == 'bicycle'
    assert fmt.palette[0] == (128, 64, 128) and fmt.palette[13] == (0, 0, 142)  # road, car
    assert len(set(fmt.class_names)) == len(fmt.palette) == CLASSES


def test_labels_that_are_not_labelids_are_refused_in_one_line():
    to_onehot = datasets.label_format('cityscapes', 'all').to_onehot
    train_ids_image = np.full(IMAGE_SHAPE + (3,), 255, np.uint8)  # a *_labelTrainIds.png: 255 = ignore
    with pytest.raises(DatasetError) as caught:
        to_onehot(train_ids_image, 'x_gtFine_labelTrainIds.png')
    message = str(caught.value)
    assert 'x_gtFine_labelTrainIds.png' in message and 'value 255' in message and '_gtFine_labelIds.png' in message
    assert '\n' not in message
    colour = np.zeros(IMAGE_SHAPE + (3,), np.uint8)
    colour[..., 0] = 128  # a *_gtFine_color.png
    with pytest.raises(DatasetError) as caught:
        to_onehot(colour, 'x_gtFine_color.png')
    assert 'x_gtFine_color.png' in str(caught.value) and 'colours' in str(caught.value)


def test_labels_are_held_in_memory_as_one_byte_a_pixel_and_come_back_as_the_same_one_hot(small_cityscapes):
    onehot = datasets.read_onehot(os.path.join(small_cityscapes, 'gtFine', *HAND_LABEL[:2],
                                               HAND_LABEL[2] + '_gtFine_labelIds.png'),
                                  datasets.label_format('cityscapes', 'all').to_onehot)
    ids = batches.class_ids(onehot)
    assert ids.dtype == np.uint8 and ids.shape == IMAGE_SHAPE
    assert np.array_equal(batches.onehot_batch(ids[None], CLASSES)[0], onehot)


# --------------------------------------------------------------------------- splits and detection

def _train_args(root, *extra):
    return cli.parse_args(['train', '--data-dir', root, *extra])


def test_auto_detection_splits_and_cityscapes_default_image_shape(small_cityscapes):
    root = small_cityscapes
    args = _train_args(root, '--val-cities', 'ulm')
    assert splits.detect_dataset(args.data_dir, args.dataset) == 'cityscapes'
    with contextlib.redirect_stdout(io.StringIO()) as out:
        dataset, _, train, val, test, overlays = splits.training_data(args)
    assert out.getvalue().strip().endswith('network input 256x512'), 'the run says which input size it took'
    assert dataset == 'cityscapes' and args.image_shape == config.CITYSCAPES_RECIPE['image_shape'] == (256, 512)
    assert {cityscapes.city_of(image) for image, _ in train} == {'aachen'}
    assert {cityscapes.city_of(image) for image, _ in val} == {'ulm'}, 'the checkpoint is chosen on a held-out city'
    assert [_relative(image, root).split('/')[1] for image, _ in test] == ['val'] * 4, 'reported on val, once'
    assert [_relative(image, root).split('/')[1] for image in overlays] == ['test'] * 4
    given = _train_args(root, '--val-cities', 'ulm', '--image-shape', '48', '96')
    with contextlib.redirect_stdout(io.StringIO()):
        splits.training_data(given)
    assert given.image_shape == (48, 96), '--image-shape wins over the dataset default'


def test_default_val_cities_are_three_whole_train_cities(tmp_path):
    root = write_cityscapes(str(tmp_path / 'cityscapes'),
                            {'train': {'aachen': 1, 'bochum': 1, 'krefeld': 2, 'ulm': 1}, 'val': {'lindau': 1}},
                            shape=(16, 32))
    splits = cityscapes.run_splits(root)
    assert [cityscapes.city_of(image) for image, _ in splits.train] == ['aachen']
    assert [cityscapes.city_of(image) for image, _ in splits.val] == ['bochum', 'krefeld', 'krefeld', 'ulm']
    assert splits.overlay_split == 'val' and len(splits.overlays) == 1, 'no test split: overlays of val images'
    with pytest.raises(DatasetError) as caught:
        cityscapes.run_splits(root, ('ulm', 'atlantis'))
    for text in ('--val-cities', 'atlantis', 'aachen, bochum, krefeld, ulm'):
        assert text in str(caught.value), (text, str(caught.value))
    with pytest.raises(DatasetError, match='every train city'):
        cityscapes.run_splits(root, ('aachen', 'bochum', 'krefeld', 'ulm'))


def test_overlays_are_a_few_images_of_every_city_spread_over_it():
    paths = ['/d/leftImg8bit/test/%s/%s_%06d_000019_leftImg8bit.png' % (city, city, seq)
             for city, count in (('bonn', 25), ('mainz', 3)) for seq in range(count)]
    chosen = cityscapes.overlay_images(paths, per_city=4)
    assert [os.path.basename(path)[:-len('_000019_leftImg8bit.png')] for path in chosen] == [
        'bonn_000000', 'bonn_000008', 'bonn_000016', 'bonn_000024', 'mainz_000000', 'mainz_000001', 'mainz_000002']


# --------------------------------------------------------------------------- bad layouts, one line each

def train_error(runs, vgg, root, *extra):
    """main.py train's one-line message for --data-dir root (the layout is read before anything is built)."""
    _, message = run_main(['train', '--data-dir', root, '--vgg-dir', vgg, '--runs-dir', runs,
                           '--image-shape', *map(str, NETWORK_SHAPE), '--epochs', '1', *(extra or VAL_CITY)])
    assert isinstance(message, str) and message.startswith('main.py train: '), message
    assert '\n' not in message, 'one line: %r' % message
    assert os.listdir(runs) == [], 'a failed start leaves no run folder'
    return message


def test_bad_layouts_are_named_in_one_line(small_cityscapes, small_vgg, new_folder):
    def path(root, *parts):
        return os.path.join(root, *parts)

    def _broken(name, damage):
        """A copy of small_cityscapes with `damage` done to it."""
        root = os.path.join(new_folder(name), 'cityscapes')
        shutil.copytree(small_cityscapes, root)
        damage(root)
        return root

    def _train_error(root, *extra):
        return train_error(new_folder('bad-runs'), small_vgg, root, *extra)

    missing = _broken('missing-label', lambda root: os.remove(
        path(root, 'gtFine', 'train', 'aachen', 'aachen_000001_000019_gtFine_labelIds.png')))
    assert 'aachen_000001_000019_leftImg8bit.png has no label aachen/aachen_000001_000019_gtFine_labelIds.png' \
        in _train_error(missing)

    orphan = _broken('orphan-label', lambda root: os.remove(
        path(root, 'leftImg8bit', 'val', 'munster', 'munster_000001_000019_leftImg8bit.png')))
    assert 'munster_000001_000019_gtFine_labelIds.png has no image' in _train_error(orphan)

    stray = _broken('stray', lambda root: open(path(root, 'leftImg8bit', 'train', 'ulm', 'notes.txt'), 'w').close())
    assert '%s does not belong in' % path(stray, 'leftImg8bit', 'train', 'ulm', 'notes.txt') in _train_error(stray)

    stray_label = _broken('stray-label', lambda root: shutil.copy(
        path(root, 'leftImg8bit', 'val', 'munster', 'munster_000000_000019_leftImg8bit.png'),
        path(root, 'gtFine', 'val', 'munster', 'munster_000000_000019_leftImg8bit.png')))
    assert 'gtFine/val/munster/munster_000000_000019_leftImg8bit.png does not belong in' in _train_error(stray_label)

    def empty_val(root):
        for city in CITIES['val']:
            shutil.rmtree(path(root, 'leftImg8bit', 'val', city))
    empty = _broken('empty-val', empty_val)
    assert 'no images (*.png) in %s' % path(empty, 'leftImg8bit', 'val') in _train_error(empty)

    wrong_city = _broken('wrong-city', lambda root: shutil.move(
        path(root, 'leftImg8bit', 'train', 'ulm', 'ulm_000000_000019_leftImg8bit.png'),
        path(root, 'leftImg8bit', 'train', 'aachen', 'ulm_000000_000019_leftImg8bit.png')))
    message = _train_error(wrong_city)
    assert 'ulm_000000_000019_leftImg8bit.png is in the folder of aachen but its name says ulm' in message, message

    outside = _broken('outside-city', lambda root: shutil.copy(
        path(root, 'leftImg8bit', 'train', 'ulm', 'ulm_000000_000019_leftImg8bit.png'),
        path(root, 'leftImg8bit', 'train', 'ulm_000000_000019_leftImg8bit.png')))
    assert 'is not in a city folder' in _train_error(outside)

    assert 'pass its parent' in _train_error(path(small_cityscapes, 'leftImg8bit'))
    no_gtfine = _broken('no-gtfine', lambda root: shutil.rmtree(path(root, 'gtFine')))
    message = _train_error(no_gtfine)
    assert 'has no gtFine/ folder' in message and 'gtFine_trainvaltest.zip' in message, message
    assert 'atlantis is no train city' in _train_error(small_cityscapes, '--val-cities', 'atlantis')

    train_ids = _broken('train-ids', lambda root: write_png(
        path(root, 'gtFine', 'val', 'munster', 'munster_000000_000019_gtFine_labelIds.png'),
        np.full(IMAGE_SHAPE, 255, np.uint8)))
    assert 'munster_000000_000019_gtFine_labelIds.png is not a Cityscapes labelIds image: it has the value 255' in \
        _train_error(train_ids)


# --------------------------------------------------------------------------- metrics

def test_a_class_absent_from_labels_and_predictions_is_undefined_never_zero_or_nan():
    class_iou = road_metrics.ClassIoU(3)
    actual = np.array([[0, 0, 1, 1]])
    predicted = np.array([[0, 1, 1, 1]])
    class_iou.update(predicted, actual, np.ones_like(actual, bool))
    names = ('road', 'sidewalk', 'train')
    report = scoring.class_iou_json(class_iou, names)
    assert report == {'miou': (1 / 2 + 2 / 3) / 2, 'class_iou': {'road': 1 / 2, 'sidewalk': 2 / 3, 'train': None}}
    json.loads(json.dumps(report), parse_constant=_refuse)
    text = scoring.format_class_iou(class_iou, names)
    assert 'IoU train    undefined (class absent)' in text and 'over the 2 defined classes (1 undefined' in text
    assert scoring.class_iou_json(road_metrics.ClassIoU(2), ('a', 'b')) == {
        'miou': None, 'class_iou': {'a': None, 'b': None}}


def _refuse(constant):
    raise AssertionError('the JSON holds %s, which is not JSON' % constant)


# --------------------------------------------------------------------------- training and evaluate

def train_briefly(runs, data_dir, vgg, classes, epochs):
    """(run folder, main.py train's output) of a short run at 32x64 on the generated 64x128 data."""
    out, exit_value = run_main(['train', '--data-dir', data_dir, '--vgg-dir', vgg,
                                '--runs-dir', runs, '--classes', classes, *VAL_CITY, '--epochs', str(epochs),
                                '--image-shape', *map(str, NETWORK_SHAPE), '--batch-size', '2',
                                '--learning-rate', '1e-3', '--keep-prob', '1', '--skip-scales', '1', '1',
                                '--no-augment'])
    assert exit_value is None, exit_value
    (run,) = os.listdir(runs)
    return os.path.join(runs, run), out


@pytest.fixture(scope='module')
def trained_run(tmp_path_factory, small_cityscapes, small_vgg):
    """(run folder, output) of two epochs on all 19 classes."""
    return train_briefly(str(tmp_path_factory.mktemp('cityscapes-runs')), small_cityscapes, small_vgg, 'all', 2)


@pytest.fixture(scope='module')
def trained_road_run(tmp_path_factory, small_cityscapes, small_vgg):
    """(run folder, output) of one epoch on road and not road."""
    return train_briefly(str(tmp_path_factory.mktemp('cityscapes-road-runs')), small_cityscapes, small_vgg, 'road',
                         1)


def _evaluate_json(run, data_dir, *extra):
    """(output lines, the JSON object of the last line) of main.py evaluate --json on the generated data."""
    out, exit_value = run_main(['evaluate', '--model', run, '--data-dir', data_dir, '--json', *extra])
    assert exit_value is None, exit_value
    lines = out.strip().splitlines()
    return lines, json.loads(lines[-1], parse_constant=_refuse)


def test_training_lowers_the_loss_and_writes_the_run_folder_kitti_runs_write(trained_run, small_cityscapes):
    run, out = trained_run
    assert 'Cityscapes: training on 4 train images, choosing the checkpoint on the 2 images of the held-out ' \
           'train cities ulm, reporting on the 4 val images' in out, out
    with open(os.path.join(run, 'metrics.csv')) as f:
        rows = list(csv.DictReader(f))
    assert [row['epoch'] for row in rows] == ['1', '2']
    assert float(rows[1]['train_loss']) < float(rows[0]['train_loss']), rows
    assert 'val_miou' in rows[0], 'validation measures mean class IoU, which chooses the checkpoint'
    for part in ('run.json', 'checkpoints/best/state.json', 'checkpoints/last/state.json', 'export/saved_model.pb',
                 'test_metrics.json'):
        assert os.path.isfile(os.path.join(run, part)), part
    with open(os.path.join(run, 'checkpoints', 'last', 'state.json')) as f:
        assert 'best_miou' in json.load(f)
    with open(os.path.join(run, 'run.json')) as f:
        config = json.load(f)
    assert config['dataset'] == 'cityscapes' and config['classes'] == 'all' and config['image_shape'] == [32, 64]
    assert {_relative(image, small_cityscapes).split('/')[1] for image, _ in config['test']} == {'val'}
    overlays = sorted(name for name in os.listdir(run) if name.endswith('.png'))
    assert overlays == ['%s_%06d_000019_leftImg8bit.png' % (city, seq) for city in ('berlin', 'bonn')
                        for seq in range(2)]
    assert all(iio.imread(os.path.join(run, name)).shape == IMAGE_SHAPE + (3,) for name in overlays), \
        'overlays at the images\' full size, not the network\'s 32x64'
    assert 'mean class IoU' in out and 'on 4 Cityscapes val images' in out


def test_evaluate_gives_per_class_iou_in_the_table_and_the_json(trained_run, small_cityscapes):
    run, _ = trained_run
    lines, report = _evaluate_json(run, small_cityscapes)
    assert lines[0] == 'evaluate: Cityscapes val split (the test split\'s labels are not public), 4 images'
    assert lines[1].split()[:5] == ['set', 'images', 'IoU', 'MaxF', 'AP'], 'the road measures come first'
    class_lines = [line for line in lines if line.startswith('IoU ')]
    assert len(class_lines) == CLASSES and all(line.startswith('IoU %s ' % name) for line, name in
                                               zip(class_lines, cityscapes_labels.CLASS_NAMES)), class_lines
    assert list(report['class_iou']) == list(cityscapes_labels.CLASS_NAMES)
    defined = [iou for iou in report['class_iou'].values() if iou is not None]
    assert defined and all(0 <= iou <= 1 for iou in defined)
    assert abs(report['miou'] - np.mean(defined)) < 1e-12
    for name, iou in report['class_iou'].items():
        line = next(line for line in class_lines if line.startswith('IoU %s ' % name))
        assert ('undefined' in line) == (iou is None), line
    assert 0 <= report['maxf'] <= 1 and 0 <= report['ap'] <= 1
    _, message = run_main(['evaluate', '--model', run, '--data-dir', small_cityscapes, '--split', 'test'])
    assert message == 'main.py evaluate: Cityscapes\' test labels are not public: gtFine/test holds only dummy ' \
                      'labels; evaluate on --split val', message


def test_a_road_model_is_chosen_by_maxf_and_evaluated_with_the_binary_road_measures(trained_road_run,
                                                                                    small_cityscapes):
    run, out = trained_road_run
    with open(os.path.join(run, 'checkpoints', 'best', 'state.json')) as f:
        assert 'best_maxf' in json.load(f)
    assert 'best validation road MaxF' in out, out
    lines, report = _evaluate_json(run, small_cityscapes)
    assert not any(line.startswith('IoU ') for line in lines) and 'class_iou' not in report
    assert 0 < report['maxf'] <= 1 and 0 < report['ap'] <= 1 and report['images'] == 4
