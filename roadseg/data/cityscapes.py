"""Cityscapes on disk: the official layout, images paired with their labels, and the splits a run uses.

    <root>/leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <root>/gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

(leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip unzipped into one folder). Labels are the
labelIds images; gtFine's other files are left alone. The labels' meaning is in cityscapes_labels.py.

The splits of a run, and why. The test split's labels are not public (gtFine/test holds only the ego vehicle
and the rectification border), so the number to report is measured on val. Choosing the checkpoint on val
as well would make that number the best of many looks at val, an optimistic one. So the checkpoint is chosen
on whole train cities held out from training (--val-cities), and val is touched once, by the chosen model:
  - train:      the train split without the held-out cities;
  - validation: the held-out train cities (whole cities: one city's images share its streets, buildings and
                light, so a random share of them would be scored on near-copies of training scenes);
  - test:       the val split, scored once at the end (test_metrics.json) and by `evaluate`;
  - overlays:   a few test images per city (all 1,525 at 2048x1024 would be several GB of PNGs per run);
                `python main.py infer` makes the others.
"""
import collections
import os

import numpy as np

from roadseg import config
from roadseg.data import datasets
from roadseg.errors import DatasetError

IMAGES, LABELS = 'leftImg8bit', 'gtFine'
IMAGE_SUFFIX = '_leftImg8bit.png'
LABEL_SUFFIX = '_gtFine_labelIds.png'
# gtFine's other files: the official package's, and those cityscapesScripts' preparation tools write beside
# them (createTrainIdLabelImgs, createTrainIdInstanceImgs). They are skipped, not refused.
OTHER_LABEL_SUFFIXES = ('_gtFine_color.png', '_gtFine_instanceIds.png', '_gtFine_polygons.json',
                        '_gtFine_labelTrainIds.png', '_gtFine_instanceTrainIds.png')
TRAIN, VAL, TEST = 'train', 'val', 'test'
OVERLAYS_PER_CITY = 10
TEST_LABELS_NOTE = 'Cityscapes\' test labels are not public: gtFine/test holds only dummy labels'

# train, validation and test (image, label) pairs, the images to overlay and the split they come from
RunSplits = collections.namedtuple('RunSplits', 'train val test overlays overlay_split')


def is_cityscapes(root):
    """True when `root` has leftImg8bit/ or gtFine/, or is one of them (check_root then says what to pass)."""
    return (any(os.path.isdir(os.path.join(root, kind)) for kind in (IMAGES, LABELS))
            or os.path.basename(os.path.normpath(root)) in (IMAGES, LABELS))


def check_root(root):
    """DatasetError unless `root` holds both leftImg8bit/ and gtFine/."""
    if os.path.basename(os.path.normpath(root)) in (IMAGES, LABELS):
        raise DatasetError('%s is a folder inside a Cityscapes folder; pass its parent, the folder that holds '
                           'both %s/ and %s/' % (root, IMAGES, LABELS))
    for kind, package in ((IMAGES, 'leftImg8bit_trainvaltest.zip'), (LABELS, 'gtFine_trainvaltest.zip')):
        if not os.path.isdir(os.path.join(root, kind)):
            raise DatasetError('%s has no %s/ folder: it is not a Cityscapes folder. Unzip %s into it (see '
                               'docs/datasets.md, Cityscapes)' % (root, kind, package))


def city_of(path):
    """The city a Cityscapes file belongs to, from its name (aachen_000000_000019_leftImg8bit.png: aachen)."""
    return os.path.basename(path).split('_')[0]


def split_files(root, kind, split, suffix, skipped=()):
    """{'<city>/<name without suffix>': path} of the `suffix` files in <root>/<kind>/<split>/<city>/.

    Hidden files and names ending in a `skipped` suffix are passed over. Anything else there, a file outside a
    city folder, or a file whose name starts with another city than its folder's raises DatasetError naming it.
    """
    split_dir = os.path.join(root, kind, split)
    if not os.path.isdir(split_dir):
        raise DatasetError('%s does not exist; unzip the Cityscapes packages into %s (see docs/datasets.md, '
                           'Cityscapes)' % (split_dir, root))
    found = {}
    for city in sorted(name for name in os.listdir(split_dir) if not name.startswith('.')):
        city_dir = os.path.join(split_dir, city)
        if not os.path.isdir(city_dir):
            raise DatasetError('%s is not in a city folder: Cityscapes keeps every file in %s/<city>/; move or '
                               'remove it' % (city_dir, split_dir))
        for name in sorted(os.listdir(city_dir)):
            if name.startswith('.') or name.endswith(skipped):
                continue
            path = os.path.join(city_dir, name)
            if not name.endswith(suffix) or not os.path.isfile(path):
                raise DatasetError('%s does not belong in %s: only *%s files do; move or remove it'
                                   % (path, city_dir, suffix))
            if city_of(name) != city:
                raise DatasetError('%s is in the folder of %s but its name says %s; move it to %s'
                                   % (path, city, city_of(name), os.path.join(split_dir, city_of(name))))
            found['%s/%s' % (city, name[:-len(suffix)])] = path
    return found


def split_pairs(root, split):
    """Sorted (image, labelIds) path pairs of a split, paired by name; DatasetError names the first misfit."""
    check_root(root)
    images = split_files(root, IMAGES, split, IMAGE_SUFFIX)
    labels = split_files(root, LABELS, split, LABEL_SUFFIX, OTHER_LABEL_SUFFIXES)
    return datasets.pair_by_name({key + IMAGE_SUFFIX: path for key, path in images.items()},
                                 {key + IMAGE_SUFFIX: path for key, path in labels.items()},
                                 os.path.join(root, IMAGES, split), os.path.join(root, LABELS, split),
                                 lambda name: name[:-len(IMAGE_SUFFIX)] + LABEL_SUFFIX)


def images_of_test_split(root):
    """The images of the test split (its labels are not public), or [] when the split is absent or empty."""
    if not os.path.isdir(os.path.join(root, IMAGES, TEST)):
        return []
    return sorted(split_files(root, IMAGES, TEST, IMAGE_SUFFIX).values())


def evaluation_pairs(root, split=None):
    """(pairs, what they are) to score a model on: val, the split with public labels that no run trains on."""
    if split == TEST:
        raise DatasetError('%s; evaluate on --split val' % TEST_LABELS_NOTE)
    return split_pairs(root, VAL), 'Cityscapes val split (the test split\'s labels are not public)'


def run_splits(root, val_cities=config.DEFAULT_VAL_CITIES):
    """RunSplits of a Cityscapes folder: see the module's docstring."""
    pool, report = split_pairs(root, TRAIN), split_pairs(root, VAL)
    cities = sorted({city_of(image) for image, _ in pool})
    both = sorted(set(cities) & {city_of(image) for image, _ in report})
    if both:
        raise DatasetError('%s %s in both %s and %s: a run would train on the images it reports on (Cityscapes\' '
                           'own splits share no city). Keep each city in one split'
                           % ('city ' + both[0] if len(both) == 1 else 'cities ' + ', '.join(both),
                              'is' if len(both) == 1 else 'are', os.path.join(root, IMAGES, TRAIN),
                              os.path.join(root, IMAGES, VAL)))
    unknown = sorted(set(val_cities) - set(cities))
    if unknown:
        raise DatasetError('--val-cities: %s %s no train city of %s (its train cities: %s)'
                           % (', '.join(unknown), 'is' if len(unknown) == 1 else 'are', root, ', '.join(cities)))
    train = [pair for pair in pool if city_of(pair[0]) not in val_cities]
    if not train:
        raise DatasetError('--val-cities holds out every train city of %s; leave at least one to train on' % root)
    val = [pair for pair in pool if city_of(pair[0]) in val_cities]
    test_split = images_of_test_split(root)
    if test_split:
        return RunSplits(train, val, report, overlay_images(test_split), TEST)
    return RunSplits(train, val, report, overlay_images([image for image, _ in report]), VAL)


def overlay_images(paths, per_city=OVERLAYS_PER_CITY):
    """Up to `per_city` images of each city, spread evenly over its sorted names."""
    by_city = collections.defaultdict(list)
    for path in sorted(paths):
        by_city[city_of(path)].append(path)
    chosen = []
    for members in by_city.values():
        picks = np.unique(np.linspace(0, len(members) - 1, min(per_city, len(members))).round().astype(int))
        chosen.extend(members[i] for i in picks)
    return chosen


def describe(splits, val_cities, image_shape):
    """One line saying what a run trains, validates and reports on, for the run's log."""
    return ('Cityscapes: training on %d train images, choosing the checkpoint on the %d images of the held-out '
            'train cities %s, reporting on the %d val images (%s); overlays of %d %s images; network input %dx%d'
            % (len(splits.train), len(splits.val), ', '.join(sorted(val_cities)), len(splits.test),
               TEST_LABELS_NOTE, len(splits.overlays), splits.overlay_split, image_shape[0], image_shape[1]))
