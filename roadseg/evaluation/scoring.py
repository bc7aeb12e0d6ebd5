"""Scoring a model on labelled images: the KITTI road measures, and per-class IoU for all-class models."""
import collections
import math

import numpy as np
from tqdm import tqdm

from roadseg.data import datasets, images
from roadseg.evaluation import road_metrics
from roadseg.serving.files import predictions


def evaluate(predict, pairs, to_onehot=datasets.kitti_label_to_onehot, batch_size=8, description='evaluating',
             bev_scores=None):
    """(RoadMetrics, ClassIoU or None) of `predict` on (image, label) pairs; the RoadMetrics keeps each image's
    IoU by its path. With `bev_scores` (a bev.BevScores), the images it has calibrations of are scored in the
    bird's-eye view too, into it.

    Predictions are compared with the labels at the labels' own resolution, as the KITTI devkit does;
    pixels whose one-hot row is all zero (don't care, unlabelled, ignore) are left out.
    """
    metrics, class_iou = road_metrics.RoadMetrics(), None
    labels = dict(pairs)
    for path, image, probabilities in tqdm(predictions(predict, sorted(labels), batch_size), total=len(labels),
                                           desc=description, unit='img', leave=False):
        road_probability, onehot = _compared(predict, path, image, probabilities, labels[path], to_onehot)
        labelled = onehot.any(axis=-1)
        road, category = onehot[..., predict.road_class], datasets.score_group(path)
        metrics.update(road_probability, road, labelled, category=category, name=path)
        if bev_scores is not None:
            bev_scores.update(path, road_probability, road, labelled, category)
        if onehot.shape[-1] > 2:
            class_iou = class_iou or road_metrics.ClassIoU(onehot.shape[-1])
            class_iou.update(probabilities.argmax(axis=-1), onehot.argmax(axis=-1), labelled)
    return metrics, class_iou


def measured(metrics):
    """{set name: result or None} for all images and each category; None where no pixel was labelled."""
    results = {}
    for name, compute in [('all', metrics.result)] + [(category, lambda c=category: metrics.category_result(c))
                                                      for category in metrics.categories()]:
        try:
            results[name] = compute()
        except ValueError:
            results[name] = None
    return results


def _compared(predict, path, image, probabilities, label_path, to_onehot):
    """(road probability in [0, 1], one-hot label) of one image, checked: finite, the label of the image's size."""
    if not np.isfinite(probabilities).all():
        raise FloatingPointError('the network gives non-finite probabilities for %s' % path)
    return np.clip(probabilities[..., predict.road_class], 0.0, 1.0), onehot_label(path, image, label_path, to_onehot)


def onehot_label(path, image, label_path, to_onehot):
    """The one-hot label of the image at `path`, read from `label_path` and checked to be of the image's size."""
    label = images.read_rgb(label_path)
    datasets.check_same_size(path, image, label_path, label)
    return to_onehot(label, label_path)


Scored = collections.namedtuple('Scored', 'path image road_probability road labelled iou')


def worst_images(predict, pairs, to_onehot, image_iou, count):
    """The `count` images of `pairs` with the lowest road IoU in `image_iou` ({path: IoU}, as evaluate keeps it;
    ties by name, undefined IoUs left out), predicted again: a list of Scored, the worst first."""
    ranked = sorted((iou, path) for path, iou in image_iou.items() if not math.isnan(iou))[:count]
    labels, iou_of = dict(pairs), {path: iou for iou, path in ranked}
    scored = []
    for path, image, probabilities in predictions(predict, sorted(iou_of)):
        road_probability, onehot = _compared(predict, path, image, probabilities, labels[path], to_onehot)
        scored.append(Scored(path, image, road_probability, onehot[..., predict.road_class], onehot.any(axis=-1),
                             iou_of[path]))
    return sorted(scored, key=lambda one: (one.iou, one.path))


def format_class_iou(class_iou, class_names):
    """Per-class IoU and their mean as text lines; a class neither in the labels nor predicted is undefined."""
    per_class = class_iou.per_class()
    width = max(len(name) for name in class_names)
    lines = ['IoU %-*s %s' % (width, name, _percent(iou)) for name, iou in zip(class_names, per_class)]
    undefined = int(np.isnan(per_class).sum())
    lines.append('mean class IoU %s over the %d defined classes%s' % (
        _percent(class_iou.mean()), len(class_names) - undefined,
        ' (%d undefined, left out as the Cityscapes evaluation does)' % undefined if undefined else ''))
    return '\n'.join(lines)


def class_iou_json(class_iou, class_names):
    """{'miou': mean, 'class_iou': {name: IoU}} for JSON, where an undefined IoU is None (null), never NaN."""
    return {'miou': _defined(class_iou.mean()),
            'class_iou': {name: _defined(iou) for name, iou in zip(class_names, class_iou.per_class())}}


def _defined(value):
    return None if math.isnan(value) else float(value)


def _percent(value):
    return 'undefined (class absent)' if math.isnan(value) else '%6.2f%%' % (100 * value)
