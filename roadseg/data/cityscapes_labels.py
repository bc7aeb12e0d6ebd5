"""Cityscapes' label ids, and the 19 classes its benchmark evaluates, as one-hot arrays for training and scoring.

The table below is written out from the official definition, `cityscapesscripts/helpers/labels.py` in
cityscapesScripts (https://github.com/mcordts/cityscapesScripts), so that nothing is fetched at run time:
each label's name, its id (the value in the `*_gtFine_labelIds.png` files), its trainId and its colour.
The 19 labels with a trainId below 255 are the classes the benchmark evaluates; every other label (unlabeled,
ego vehicle, rectification border, out of roi, static, dynamic, ground, parking, rail track, guard rail,
bridge, tunnel, polegroup, caravan, trailer, license plate) is ignored in training and in the metrics, as
the official evaluation ignores it (`ignoreInEval`).

License plates have the id -1, which no 8-bit image can hold: cityscapesScripts' `json2labelImg.py` does not
draw polygons with a negative id, so a plate's pixels keep the id of what it is mounted on (a car: 26).
"""
import collections

import numpy as np

from roadseg.errors import DatasetError

IGNORE = 255
CityscapesLabel = collections.namedtuple('CityscapesLabel', 'name id train_id color')

# name, labelId, trainId (255 = ignored), colour: cityscapesScripts' helpers/labels.py
LABELS = (
    CityscapesLabel('unlabeled', 0, IGNORE, (0, 0, 0)),
    CityscapesLabel('ego vehicle', 1, IGNORE, (0, 0, 0)),
    CityscapesLabel('rectification border', 2, IGNORE, (0, 0, 0)),
    CityscapesLabel('out of roi', 3, IGNORE, (0, 0, 0)),
    CityscapesLabel('static', 4, IGNORE, (0, 0, 0)),
    CityscapesLabel('dynamic', 5, IGNORE, (111, 74, 0)),
    CityscapesLabel('ground', 6, IGNORE, (81, 0, 81)),
    CityscapesLabel('road', 7, 0, (128, 64, 128)),
    CityscapesLabel('sidewalk', 8, 1, (244, 35, 232)),
    CityscapesLabel('parking', 9, IGNORE, (250, 170, 160)),
    CityscapesLabel('rail track', 10, IGNORE, (230, 150, 140)),
    CityscapesLabel('building', 11, 2, (70, 70, 70)),
    CityscapesLabel('wall', 12, 3, (102, 102, 156)),
    CityscapesLabel('fence', 13, 4, (190, 153, 153)),
    CityscapesLabel('guard rail', 14, IGNORE, (180, 165, 180)),
    CityscapesLabel('bridge', 15, IGNORE, (150, 100, 100)),
    CityscapesLabel('tunnel', 16, IGNORE, (150, 120, 90)),
    CityscapesLabel('pole', 17, 5, (153, 153, 153)),
    CityscapesLabel('polegroup', 18, IGNORE, (153, 153, 153)),
    CityscapesLabel('traffic light', 19, 6, (250, 170, 30)),
    CityscapesLabel('traffic sign', 20, 7, (220, 220, 0)),
    CityscapesLabel('vegetation', 21, 8, (107, 142, 35)),
    CityscapesLabel('terrain', 22, 9, (152, 251, 152)),
    CityscapesLabel('sky', 23, 10, (70, 130, 180)),
    CityscapesLabel('person', 24, 11, (220, 20, 60)),
    CityscapesLabel('rider', 25, 12, (255, 0, 0)),
    CityscapesLabel('car', 26, 13, (0, 0, 142)),
    CityscapesLabel('truck', 27, 14, (0, 0, 70)),
    CityscapesLabel('bus', 28, 15, (0, 60, 100)),
    CityscapesLabel('caravan', 29, IGNORE, (0, 0, 90)),
    CityscapesLabel('trailer', 30, IGNORE, (0, 0, 110)),
    CityscapesLabel('train', 31, 16, (0, 80, 100)),
    CityscapesLabel('motorcycle', 32, 17, (0, 0, 230)),
    CityscapesLabel('bicycle', 33, 18, (119, 11, 32)),
    CityscapesLabel('license plate', -1, IGNORE, (0, 0, 142)),
)

_EVALUATED = sorted((label for label in LABELS if label.train_id != IGNORE), key=lambda label: label.train_id)
CLASS_NAMES = tuple(label.name for label in _EVALUATED)
PALETTE = tuple(label.color for label in _EVALUATED)
ROAD_TRAIN_ID = 0
MAX_LABEL_ID = max(label.id for label in LABELS)


def _train_id_table():
    """labelId -> trainId for every 8-bit value (values above MAX_LABEL_ID are refused before the lookup)."""
    table = np.full(256, IGNORE, np.uint8)
    stored = [label for label in LABELS if label.id >= 0]
    table[[label.id for label in stored]] = [label.train_id for label in stored]
    return table


_TRAIN_IDS = _train_id_table()
# trainId -> one-hot row; the row of 255 (ignore) is all zero.
_ONEHOT_ROWS = np.eye(256, len(CLASS_NAMES), dtype=bool)


def train_ids(label, path='label'):
    """A decoded labelIds image (HxWx3, the id in every channel) -> HxW trainIds, 255 where ignored.

    A colour image (e.g. a *_gtFine_color.png) or a value that is no label id (e.g. the 255 of a
    *_labelTrainIds.png) is refused: read as ids it would train on nonsense.
    """
    ids = label[..., 0]
    if not (np.array_equal(ids, label[..., 1]) and np.array_equal(ids, label[..., 2])):
        raise DatasetError('%s is not a Cityscapes labelIds image: it has colours, where labelIds images are grey '
                           '(one label id per pixel); give the *_gtFine_labelIds.png files' % path)
    if ids.max() > MAX_LABEL_ID:
        raise DatasetError('%s is not a Cityscapes labelIds image: it has the value %d (label ids are 0-%d); give '
                           'the *_gtFine_labelIds.png files, not trainId or instance images'
                           % (path, int(ids.max()), MAX_LABEL_ID))
    return _TRAIN_IDS[ids]


def all_classes_onehot(label, path='label'):
    """labelIds -> (H, W, 19) one-hot, class c = trainId c; ignored pixels all zero."""
    return _ONEHOT_ROWS[train_ids(label, path)]


def road_onehot(label, path='label'):
    """labelIds -> (H, W, 2): class 1 = road (trainId 0), class 0 = the 18 other classes; ignored pixels all zero."""
    classes = train_ids(label, path)
    road = classes == ROAD_TRAIN_ID
    return np.stack([(classes != IGNORE) & ~road, road], axis=-1)
