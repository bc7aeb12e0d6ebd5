"""Scoring a model on labelled images: the KITTI road measures, and per-class IoU for all-class models."""
import math

import numpy as np
from tqdm import tqdm

from roadseg.data import datasets, images
from roadseg.evaluation import road_metrics
from roadseg.serving.files import predictions


def evaluate(predict, pairs, to_onehot=datasets.kitti_label_to_onehot, batch_size=8, description='evaluating'):
    """(RoadMetrics, ClassIoU or None) of `predict` on (image, label) pairs.

    Predictions are compared with the labels at the labels' own resolution, as the KITTI devkit does;
    pixels whose one-hot row is all zero (don't care, unlabelled, ignore) are left out.
    """
    metrics, class_iou = road_metrics.RoadMetrics(), None
    labels = dict(pairs)
    for path, image, probabilities in tqdm(predictions(predict, sorted(labels), batch_size), total=len(labels),
                                           desc=description, unit='img', leave=False):
        if not np.isfinite(probabilities).all():
            raise FloatingPointError('the network gives non-finite probabilities for %s' % path)
        label = images.read_rgb(labels[path])
        datasets.check_same_size(path, image, labels[path], label)
        onehot = to_onehot(label, labels[path])
        labelled = onehot.any(axis=-1)
        metrics.update(np.clip(probabilities[..., predict.road_class], 0.0, 1.0), onehot[..., predict.road_class],
                       labelled, category=datasets.score_group(path))
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
