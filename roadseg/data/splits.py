"""Which images train, choose the checkpoint and report, for every dataset; and which a model is evaluated on.

Validation is never trained on, and the labelled test images are scored once, by the chosen model: a KITTI
share per category, CamVid a whole drive, Cityscapes whole train cities (cityscapes.run_splits says why).
"""
import collections
import os

import numpy as np

from roadseg.data import cityscapes, datasets, downloads, roadgen
from roadseg.errors import DatasetError

# A run's data: the dataset's name, its root, the train, validation and labelled test (image, label) pairs, and
# the images its overlays are made of.
RunData = collections.namedtuple('RunData', 'dataset root train val test overlays')


def detect_dataset(data_dir, dataset='auto'):
    """The layout of `data_dir`: `dataset` itself unless it is 'auto'."""
    if dataset != 'auto':
        return dataset
    if cityscapes.is_cityscapes(data_dir):
        return 'cityscapes'
    return 'camvid' if datasets.is_camvid(data_dir) else 'kitti'


def camvid_splits(root, val_drive):
    """(train, validation, test) of a CamVid folder: validation is one whole drive that is never trained on."""
    pool = datasets.camvid_pairs(root, 'train') + datasets.camvid_pairs(root, 'val')
    val = [pair for pair in pool if datasets.camvid_drive(pair[0]) == val_drive]
    if not val:
        raise DatasetError('no images of drive %s in %s/train or val: choose --val-drive among %s'
                           % (val_drive, root, ', '.join(sorted({datasets.camvid_drive(p) for p, _ in pool}))))
    train = [pair for pair in pool if datasets.camvid_drive(pair[0]) != val_drive]
    test = datasets.camvid_pairs(root, 'test') if datasets.has_camvid_test(root) else []
    return train, val, test


def kitti_splits(data_dir, val_fraction, kitti_url=None):
    """(data_road, train, validation): a share of each KITTI category validates; the test images are unlabelled."""
    data_road = downloads.maybe_download_kitti(data_dir, kitti_url)
    train, val = split_pairs(datasets.kitti_road_pairs(os.path.join(data_road, 'training')), val_fraction)
    if not train:
        raise DatasetError('--val-fraction %g leaves no training images (of %d); lower it'
                           % (val_fraction, len(train) + len(val)))
    return data_road, train, val


def training_data(args):
    """The RunData of `train`'s --data-dir, split as its flags say."""
    dataset = detect_dataset(args.data_dir, args.dataset)
    if dataset == 'cityscapes':
        found = cityscapes.run_splits(args.data_dir, args.val_cities)
        print(cityscapes.describe(found, args.val_cities, args.image_shape))
        return RunData(dataset, args.data_dir, found.train, found.val, found.test, found.overlays)
    if dataset == 'camvid':
        return camvid_data(args.data_dir, args.val_drive)
    data_road, train, val = kitti_splits(args.data_dir, args.val_fraction, args.kitti_url)
    return RunData('kitti-mask' if args.labels == 'mask' else 'kitti', data_road, train, val, [],
                   datasets.kitti_test_images(data_road))


def camvid_data(root, val_drive):
    """The RunData of a CamVid folder: the test split overlaid where there is one, else the validation drive."""
    train, val, test = camvid_splits(root, val_drive)
    return RunData('camvid', root, train, val, test, [image for image, _ in (test or val)])


# The generated-roads demo: 520 labelled scenes, of which one in 13 validate and one in 13 test (about 40
# each); 12 unlabelled scenes at KITTI's test sizes for the overlays.
DEMO_LABELLED_IMAGES = 520
DEMO_HELD_OUT_SHARE = 1 / 13
DEMO_OVERLAY_IMAGES = 12


def generated_roads_data(demo_dir, seed):
    """The RunData of the generated-roads demo, generating the scenes in `demo_dir` if absent."""
    data_road = roadgen.ensure_dataset(demo_dir, n_train=DEMO_LABELLED_IMAGES, n_test=DEMO_OVERLAY_IMAGES, seed=seed)
    pairs = datasets.kitti_road_pairs(os.path.join(data_road, 'training'))
    rest, test = split_pairs(pairs, DEMO_HELD_OUT_SHARE)
    train, val = split_pairs(rest, len(test) / len(rest))
    return RunData('kitti', data_road, train, val, test, datasets.kitti_test_images(data_road))


def evaluation_pairs(data_dir, split=None):
    """(labelled pairs, a sentence saying which they are) for evaluate's --data-dir and --split."""
    if cityscapes.is_cityscapes(data_dir):
        return cityscapes.evaluation_pairs(data_dir, split)
    if datasets.is_camvid(data_dir):
        chosen = split or ('test' if datasets.has_camvid_test(data_dir) else 'val')
        if chosen == 'test' and not datasets.has_camvid_test(data_dir):
            raise DatasetError('%s has no test/ and testannot/ folders; use --split val' % data_dir)
        note = '' if chosen == 'test' or split else ' (there is no test/ split here)'
        return datasets.camvid_pairs(data_dir, chosen), 'CamVid %s split%s' % (chosen, note)
    data_road = downloads.maybe_download_kitti(data_dir)
    return (datasets.kitti_road_pairs(os.path.join(data_road, 'training')),
            'all labelled KITTI training images (KITTI\'s test labels are not public)')


def split_pairs(pairs, fraction):
    """Deterministic split into (kept, held out), stratified by KITTI category.

    From each category (um, umm, uu), round(fraction * n) images spread evenly over its sorted list are
    held out, so neighbouring video frames do not all land on one side.
    """
    by_category = {}
    for pair in sorted(pairs):
        by_category.setdefault(datasets.kitti_category(pair[0]), []).append(pair)
    kept, held_out = [], []
    for members in by_category.values():
        count = int(round(fraction * len(members)))
        chosen = set(np.linspace(0, len(members) - 1, count).round().astype(int)) if count else set()
        for i, pair in enumerate(members):
            (held_out if i in chosen else kept).append(pair)
    return kept, held_out
