"""A faster deployed form (int8 ONNX, TFLite) against the float model it came from, on labelled images.

Both models run on every image at its own size; the road MaxF and IoU (the KITTI devkit's, road_metrics.py)
of each are pooled over the images, and per image. A form is kept when neither of its pooled measures differs
from the float model's by more than the limit (in points, of 100), either way: a form that scores otherwise is
not the model that was validated, even where it scores higher on a few images.
"""
import dataclasses
import os

import numpy as np
from tqdm import tqdm

from roadseg.data import images
from roadseg.evaluation import road_metrics, scoring

MEASURES = ('maxf', 'iou')
MEASURE_NAMES = {'maxf': 'MaxF', 'iou': 'IoU'}


@dataclasses.dataclass
class FormCheck:
    images: int
    reference: dict          # the float model's pooled measures (road_metrics.RESULT_KEYS)
    candidate: dict          # the form's
    largest_image_change: dict   # {measure: (points, image path)}: the largest change on one image, either way

    def change(self, measure):
        """The form's pooled `measure` minus the float model's, in points."""
        return 100 * (self.candidate[measure] - self.reference[measure])

    def largest_change(self):
        """(points, measure) of the pooled measure that changes the most, either way."""
        return max((abs(self.change(measure)), measure) for measure in MEASURES)

    def summary(self):
        """One line: each pooled measure of both models and its change, and the largest change on one image."""
        pooled = ', '.join('%s %.4f -> %.4f (%+.2f points)' % (
            MEASURE_NAMES[measure], self.reference[measure], self.candidate[measure],
            self.change(measure)) for measure in MEASURES)
        one_image = ', '.join('%s %+.2f (%s)' % (MEASURE_NAMES[measure], points, name)
                              for measure, (points, name) in self.largest_image_change.items())
        return 'road %s; the largest change on one image: %s' % (pooled, one_image)


def _one_image(reference, candidate, image_path, label_path, to_onehot):
    """{'reference': ..., 'candidate': ...} of (road probability, road truth, labelled pixels) on one image, as
    road_metrics takes them."""
    image = images.read_rgb(image_path)
    onehot = scoring.onehot_label(image_path, image, label_path, to_onehot)
    truth, labelled = onehot[..., reference.road_class], onehot.any(axis=-1)
    return {name: (np.clip(predict([image])[0][..., reference.road_class], 0.0, 1.0), truth, labelled)
            for name, predict in (('reference', reference), ('candidate', candidate))}


def _measures(road_inputs):
    metrics = road_metrics.RoadMetrics()
    metrics.update(*road_inputs)
    return metrics.result()


def compare(reference, candidate, pairs, to_onehot, description='checking'):
    """FormCheck of `candidate` against `reference` (both predictors) on (image, label) path pairs."""
    pooled = {'reference': road_metrics.RoadMetrics(), 'candidate': road_metrics.RoadMetrics()}
    largest = {measure: (0.0, None) for measure in MEASURES}
    for image_path, label_path in tqdm(pairs, desc=description, unit='img', leave=False):
        both = _one_image(reference, candidate, image_path, label_path, to_onehot)
        for name, road_inputs in both.items():
            pooled[name].update(*road_inputs)
        alone = {name: _measures(road_inputs) for name, road_inputs in both.items()}
        for measure in MEASURES:
            points = 100 * float(np.nan_to_num(alone['candidate'][measure] - alone['reference'][measure]))
            if abs(points) >= abs(largest[measure][0]):
                largest[measure] = (points, os.path.basename(image_path))
    return FormCheck(len(pairs), pooled['reference'].result(), pooled['candidate'].result(), largest)


def refusal(check, limit_points, what):
    """Why the form may not be kept (one line), or None if it may."""
    points, measure = check.largest_change()
    if not points > limit_points:
        return None
    return ('%s changes road %s by %+.2f points from the float model\'s on %d labelled image(s), more than the '
            'limit of %g (--max-change); it was not kept and nothing was written' % (
                what, MEASURE_NAMES[measure], check.change(measure), check.images, limit_points))
