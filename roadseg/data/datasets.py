"""Dataset layouts on disk (KITTI Road, CamVid; Cityscapes in cityscapes.py) and their labels as one-hot arrays.

Every layout gives sorted (image path, label path) pairs; every label format turns a decoded label into
(H, W, classes) booleans where a pixel that must not count (KITTI's don't-care, CamVid's unlabelled,
Cityscapes' ignored labels) has an all-zero row: it adds nothing to the loss (model.optimize) nor to the
metrics (evaluation).
"""
import collections
import glob
import os
import re

import numpy as np
from tqdm import tqdm

from roadseg.data import cityscapes_labels, images
from roadseg.errors import DatasetError

KITTI_PAGE = 'https://www.cvlibs.net/datasets/kitti/eval_road.php'
KITTI_ARCHIVE = 'data_road.zip'

# KITTI Road label colours. A red channel of 0 marks pixels outside the evaluated area, which the KITTI
# devkit ignores ("don't care").
ROAD_COLOR = (255, 0, 255)
NOT_ROAD_COLOR = (255, 0, 0)
DONT_CARE_COLOR = (0, 0, 0)
MASK_ROAD_VALUE = 255
# KITTI Road file names: <category>_<number>.png, labels <category>_road_<number>.png.
KITTI_ROAD_NAME = re.compile(r'(um|umm|uu)_(?:road_)?\d+(?:\.\w+)?')

LabelFormat = collections.namedtuple('LabelFormat', 'to_onehot num_classes road_class class_names palette')


# --------------------------------------------------------------------------- KITTI Road

def kitti_category(filename):
    """'um', 'umm' or 'uu' for a KITTI road image or road label, else None.

    Accepts paths. Lane labels (`um_lane_*`) belong to the lane benchmark, not
    the road benchmark, and give None.
    """
    match = KITTI_ROAD_NAME.fullmatch(os.path.basename(os.fspath(filename)))
    return match.group(1) if match else None


def kitti_label_to_onehot(label, path='label'):
    """KITTI colours -> (H, W, 2) one-hot, class 0 = not road, class 1 = road, don't-care all zero.

    Any other colour is refused, with its count: such labels are not KITTI's (e.g. 0/255 masks, see
    kitti_mask_to_onehot), and reading them as "not road" would train a model that never finds road.
    """
    road = np.all(label == ROAD_COLOR, axis=-1)
    not_road = np.all(label == NOT_ROAD_COLOR, axis=-1)
    dont_care = label[..., 0] == 0
    foreign = ~(road | not_road | dont_care)
    if foreign.any():
        colours, counts = np.unique(label[foreign].reshape(-1, 3), axis=0, return_counts=True)
        common = ', '.join('%s x%d' % (tuple(int(c) for c in colour), count)
                           for colour, count in sorted(zip(colours, counts), key=lambda item: -item[1])[:3])
        raise DatasetError('%s has %d pixels in colours that are not KITTI\'s road (255,0,255), not road '
                           '(255,0,0) or don\'t care (red 0): %s. For black/white road masks (road 255) pass '
                           '--labels mask' % (path, int(foreign.sum()), common))
    return np.stack([not_road, road], axis=-1)


def kitti_mask_to_onehot(label, path='label'):
    """Road masks (road 255, anything else 0) -> (H, W, 2) one-hot; every pixel counts."""
    values = label[..., 0]
    unexpected = (values != 0) & (values != MASK_ROAD_VALUE)
    if unexpected.any():
        raise DatasetError('%s is not a road mask: %d pixels are neither 0 nor 255 (e.g. %d)'
                           % (path, int(unexpected.sum()), int(values[unexpected][0])))
    road = values == MASK_ROAD_VALUE
    return np.stack([~road, road], axis=-1)


def kitti_instructions(data_dir):
    return ('KITTI Road is not in %(data)s. To get it:\n'
            '  1. register at %(page)s and ask for the "base kit with: left color images, calibration and '
            'training labels" (%(zip)s, 0.5 GB); the download link is mailed to you;\n'
            '  2. either run  python main.py --kitti-url <that link>  or unzip %(zip)s into %(data)s yourself,\n'
            '     so that %(train)s exists.\n'
            'To try the project without KITTI, run  python main.py demo  (it generates a road dataset).'
            % {'data': data_dir, 'page': KITTI_PAGE, 'zip': KITTI_ARCHIVE,
               'train': os.path.join(data_dir, 'data_road', 'training', 'image_2')})


def kitti_road_pairs(data_folder):
    """Sorted (image, road label) path pairs of a KITTI `training` folder; lane labels are ignored."""
    image_dir = os.path.join(data_folder, 'image_2')
    label_dir = os.path.join(data_folder, 'gt_image_2')
    for folder in (image_dir, label_dir):
        if not os.path.isdir(folder):
            raise DatasetError('%s does not exist: %s is not a KITTI Road training folder. %s'
                               % (folder, data_folder, kitti_instructions(os.path.dirname(os.path.dirname(
                                   os.path.abspath(data_folder))))))
    found = {os.path.basename(p): p for p in glob.glob(os.path.join(image_dir, '*.png'))}
    labels = {os.path.basename(p).replace('_road_', '_', 1): p
              for p in glob.glob(os.path.join(label_dir, '*_road_*.png'))}
    return pair_by_name(found, labels, image_dir, label_dir, lambda name: name.replace('_', '_road_', 1))


def kitti_test_images(data_road):
    return sorted(glob.glob(os.path.join(data_road, 'testing', 'image_2', '*.png')))


def pair_by_name(found, labels, image_dir, label_dir, label_name=lambda name: name):
    """Sorted (image, label) pairs from {name: path} maps; DatasetError names the first unmatched file."""
    if not found:
        raise DatasetError('no images (*.png) in %s' % image_dir)
    missing_labels = sorted(set(found) - set(labels))
    if missing_labels:
        raise DatasetError('image %s has no label %s in %s' % (
            found[missing_labels[0]], label_name(missing_labels[0]), label_dir) + _and_more(missing_labels))
    orphans = sorted(set(labels) - set(found))
    if orphans:
        raise DatasetError('label %s has no image %s in %s' % (labels[orphans[0]], orphans[0], image_dir)
                           + _and_more(orphans))
    return [(found[name], labels[name]) for name in sorted(found)]


def _and_more(names):
    return ' (and %d more)' % (len(names) - 1) if len(names) > 1 else ''


# --------------------------------------------------------------------------- CamVid (SegNet layout)

CAMVID_SPLITS = ('train', 'val')
CAMVID_TEST_SPLIT = 'test'
CAMVID_ROAD = 3
CAMVID_UNLABELLED = 11
CAMVID_CLASS_NAMES = ('sky', 'building', 'pole', 'road', 'pavement', 'tree', 'sign', 'fence', 'car', 'pedestrian',
                      'bicyclist')
# The SegNet colours of the CamVid classes, for overlays with all classes.
CAMVID_PALETTE = ((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
                  (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192))
# The drive a CamVid file comes from is the start of its name (0001TP_006690.png, Seq05VD_f00000.png).
CAMVID_DRIVE = re.compile(r'^(0001TP|0006R0|0016E5|Seq05VD)')


def is_camvid(root):
    return all(os.path.isdir(os.path.join(root, split + suffix)) for split in CAMVID_SPLITS for suffix in ('', 'annot'))


def has_camvid_test(root):
    return all(os.path.isdir(os.path.join(root, CAMVID_TEST_SPLIT + suffix)) for suffix in ('', 'annot'))


def camvid_pairs(root, split):
    """Sorted (image, class-id label) pairs of a CamVid split ('train', 'val' or 'test')."""
    image_dir, label_dir = os.path.join(root, split), os.path.join(root, split + 'annot')
    for folder in (image_dir, label_dir):
        if not os.path.isdir(folder):
            raise DatasetError('%s does not exist: %s is not a CamVid folder in the SegNet layout (%s)'
                               % (folder, root, ', '.join(s + '/, ' + s + 'annot/' for s in CAMVID_SPLITS)))
    found = {os.path.basename(p): p for p in glob.glob(os.path.join(image_dir, '*.png'))}
    labels = {os.path.basename(p): p for p in glob.glob(os.path.join(label_dir, '*.png'))}
    return pair_by_name(found, labels, image_dir, label_dir)


def score_group(path):
    """The group an image is also scored in, beside all images: its KITTI category (um, umm, uu) or its CamVid
    drive (a new drive and a known one differ more than any recipe change); None for other images."""
    match = CAMVID_DRIVE.match(os.path.basename(os.fspath(path)))
    return kitti_category(path) or (match.group(1) if match else None)


def camvid_drive(path):
    """The CamVid drive a file comes from ('0016E5'), or 'other'."""
    match = CAMVID_DRIVE.match(os.path.basename(path))
    return match.group(1) if match else 'other'


def _camvid_ids(label, path):
    ids = label[..., 0]
    if ids.max() > CAMVID_UNLABELLED:
        raise DatasetError('%s is not a CamVid class-id label: it has the value %d (ids are 0-%d); give the '
                           'SegNet layout\'s *annot/ files' % (path, int(ids.max()), CAMVID_UNLABELLED))
    return ids


def camvid_label_to_onehot(label, path='label'):
    """CamVid class ids -> (H, W, 2): class 1 = road (id 3); unlabelled (id 11) all zero."""
    ids = _camvid_ids(label, path)
    road = ids == CAMVID_ROAD
    return np.stack([(ids != CAMVID_UNLABELLED) & ~road, road], axis=-1)


def camvid_all_classes_onehot(label, path='label'):
    """CamVid class ids -> (H, W, 11) one-hot; unlabelled pixels (id 11) all zero."""
    return np.eye(len(CAMVID_CLASS_NAMES) + 1, len(CAMVID_CLASS_NAMES), dtype=bool)[_camvid_ids(label, path)]


# --------------------------------------------------------------------------- label formats and splits

ROAD_CLASSES = ('not road', 'road')
ROAD_PALETTE = ((0, 0, 0), (0, 255, 0))
# (dataset, classes) -> how its labels decode
LABEL_FORMATS = {
    ('kitti', 'road'): LabelFormat(kitti_label_to_onehot, 2, 1, ROAD_CLASSES, ROAD_PALETTE),
    ('kitti-mask', 'road'): LabelFormat(kitti_mask_to_onehot, 2, 1, ROAD_CLASSES, ROAD_PALETTE),
    ('camvid', 'road'): LabelFormat(camvid_label_to_onehot, 2, 1, ROAD_CLASSES, ROAD_PALETTE),
    ('camvid', 'all'): LabelFormat(camvid_all_classes_onehot, len(CAMVID_CLASS_NAMES), CAMVID_ROAD,
                                   CAMVID_CLASS_NAMES, CAMVID_PALETTE),
    ('cityscapes', 'road'): LabelFormat(cityscapes_labels.road_onehot, 2, 1, ROAD_CLASSES, ROAD_PALETTE),
    ('cityscapes', 'all'): LabelFormat(cityscapes_labels.all_classes_onehot, len(cityscapes_labels.CLASS_NAMES),
                                       cityscapes_labels.ROAD_TRAIN_ID, cityscapes_labels.CLASS_NAMES,
                                       cityscapes_labels.PALETTE),
}


def label_format(dataset, classes):
    try:
        return LABEL_FORMATS[(dataset, classes)]
    except KeyError:
        known = sorted('%s/%s' % key for key in LABEL_FORMATS)
        raise DatasetError('--classes %s is not available for %s labels (available: %s)'
                           % (classes, dataset, ', '.join(known))) from None


def read_onehot(label_path, to_onehot):
    return to_onehot(images.read_rgb(label_path), label_path)


def check_labels(pairs, fmt, what):
    """Decode every label of `pairs` once, before training: a bad label stops the run before it starts.

    Returns a warning (or '') when no label has a single road pixel: such a set cannot measure road.
    """
    road_pixels = 0
    for _, label_path in tqdm(pairs, desc='checking %s labels' % what, unit='img', leave=False, disable=not pairs):
        road_pixels += int(read_onehot(label_path, fmt.to_onehot)[..., fmt.road_class].sum())
    if pairs and not road_pixels:
        return ('warning: none of the %d %s labels has a road pixel; road IoU and MaxF on them are undefined'
                % (len(pairs), what))
    return ''


def check_same_size(image_path, image, label_path, label):
    if image.shape[:2] != label.shape[:2]:
        raise DatasetError('label %s is %dx%d but its image %s is %dx%d' % (
            label_path, label.shape[1], label.shape[0], image_path, image.shape[1], image.shape[0]))


