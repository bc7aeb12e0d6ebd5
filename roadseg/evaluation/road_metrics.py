"""KITTI road benchmark metrics (perspective space) of road segmentation.

Pure numpy. The conventions follow the official KITTI road devkit
(`devkit_road/python`: `helper.py` functions `evalExp`,
`pxEval_maximizeFMeasure`, `calcEvalMeasures`, `getGroundTruth`, and the
`main` loop of `evaluateRoad.py`):

* The thresholds are k/255 for k = 0..255, and a pixel counts as road at a
  threshold when `prob >= threshold`: `evalExp` histograms the probabilities
  over the edges [-inf, thresholds..., inf] and takes FN(k) from the bins
  below threshold k and FP(k) from bin k upwards. Probabilities are compared
  as float64, so float32 inputs bin exactly as the devkit bins them.
* Don't-care pixels (`validArea`, red channel 0 in the label) are not counted.
* FN/FP and the positive/negative counts are summed over all images of a set
  before any ratio is taken, so the metrics are pooled over pixels, not
  averaged over images. Here the per-threshold histogram is summed instead;
  FN/FP are its cumulative sums, which gives the same integers.
* precision = TP / (TP + FP), recall = TP / P, F = 2PR / (P + R) (beta = 1).
  MaxF is the maximum F over the thresholds; `argmax` takes the first, i.e.
  the lowest, threshold on ties. PRE, REC, FPR, FNR are those of TP/TN/FP/FN
  at that threshold (`calcEvalMeasures`, which the devkit runs in float32;
  float64 here).
* AP is the Pascal VOC 11-point average of the highest precision at recall >=
  r, with r taken from `np.arange(0, 1.1, 0.1)` exactly as in the devkit. Some
  of those levels sit just above their decimal value (0.30000000000000004,
  0.6000000000000001, 0.7000000000000001), so a recall of exactly 0.3 does
  not reach the 0.3 level; this is kept to reproduce the devkit's numbers.

Division by zero: the devkit adds 1e-10 to the denominators of precision and
F, which makes both 0 when nothing is predicted road. Here the division is
exact and gives 0 in those cases, so the results differ from the devkit's by
at most ~1e-10 and a perfect prediction scores exactly 1. The devkit's other
divisions are unguarded and give NaN for 0/0; here too, FPR is NaN without
non-road pixels and IoU is NaN when there is neither ground-truth nor
predicted road. Without any road pixel the precision-recall curve is
undefined (the devkit yields NaN or fails), so all of its metrics are NaN.

Not from the devkit: IoU of the road class with road = `prob > 0.5` on the
unbinned probabilities (the two-class softmax argmax), TP / (TP + FP + FN).
"""

import collections

import numpy as np

NUM_THRESHOLDS = 256
THRESHOLDS = np.arange(NUM_THRESHOLDS) / 255.0
AP_RECALL_LEVELS = np.arange(0, 1.1, 0.1)
IOU_THRESHOLD = 0.5
# Metrics of the precision-recall curve, in _curve_metrics' order.
_CURVE_KEYS = ('maxf', 'ap', 'precision', 'recall', 'fpr', 'fnr', 'threshold')
RESULT_KEYS = ('iou',) + _CURVE_KEYS + ('images',)
# KITTI road images (um_000012.png) and road labels (um_road_000012.png).
_TABLE_COLUMNS = (('IoU', 'iou'), ('MaxF', 'maxf'), ('AP', 'ap'),
                  ('PRE', 'precision'), ('REC', 'recall'), ('FPR', 'fpr'),
                  ('FNR', 'fnr'))


# Per threshold: precision, recall, F-measure; and the index of MaxF.
PrCurve = collections.namedtuple('PrCurve', 'precision recall f_measure best')


class _Counts:
    """Pixel counts of a set of images: all that the metrics need, exactly."""

    def __init__(self, histogram=None, iou_tp=0, iou_fp=0, images=0):
        # histogram[is_road, k]: valid pixels whose highest threshold <= prob
        # is THRESHOLDS[k].
        self.histogram = (np.zeros((2, NUM_THRESHOLDS), np.int64)
                          if histogram is None else histogram)
        self.iou_tp = iou_tp
        self.iou_fp = iou_fp
        self.images = images

    def add(self, other):
        self.histogram += other.histogram
        self.iou_tp += other.iou_tp
        self.iou_fp += other.iou_fp
        self.images += other.images


class RoadMetrics:
    """Accumulates KITTI road metrics over images, in total and per category.

    Usage: `update()` once per image, then `result()` / `per_category()`.
    """

    def __init__(self):
        self._total = _Counts()
        self._by_category = {}
        self.image_iou = {}  # {name given to update(): that image's road IoU}

    def update(self, prob, road, valid=None, category=None, name=None):
        """Add one image.

        prob: HxW road probabilities in [0, 1]; road: HxW bool ground truth;
        valid: HxW bool, False marks don't-care pixels (default: all valid);
        category: optional name of the image's set, e.g. from
        `datasets.kitti_category(file_name)`; name: optional, to keep the
        image's own IoU in `image_iou` (NaN without road labelled or found).
        Raises ValueError on bad input, leaving the accumulator unchanged.
        """
        image = _image_counts(*_validated(prob, road, valid))
        self._total.add(image)
        if category is not None:
            self._by_category.setdefault(category, _Counts()).add(image)
        if name is not None:
            self.image_iou[name] = float(_iou(image))

    def result(self):
        """Metrics of all accumulated images as a dict with RESULT_KEYS."""
        return _metrics(self._total)

    def per_category(self):
        """{category: metrics dict} for the categories given to `update()`."""
        return {category: _metrics(counts)
                for category, counts in sorted(self._by_category.items())}

    def categories(self):
        return sorted(self._by_category)

    def category_result(self, category):
        """Metrics of one category given to `update()`."""
        return _metrics(self._by_category[category])

    def pr_curve(self, category=None):
        """The PrCurve over THRESHOLDS of all images or of one category; None
        without any road pixel (no curve)."""
        counts = self._total if category is None else self._by_category[category]
        not_road_hist, road_hist = counts.histogram
        if not road_hist.sum():
            return None
        precision, recall, f_measure = _pr_curve(
            _predicted_road(road_hist), _predicted_road(not_road_hist),
            int(road_hist.sum()))
        return PrCurve(precision, recall, f_measure, int(np.argmax(f_measure)))


def _validated(prob, road, valid):
    """prob as float64 and the two masks, after checking shapes and values."""
    prob = np.asarray(prob, dtype=np.float64)
    if prob.ndim != 2 or prob.size == 0:
        raise ValueError('prob must be a non-empty HxW array, got shape %s'
                         % (prob.shape,))
    road = _checked_mask(road, 'road', prob.shape)
    valid = (np.ones(prob.shape, bool) if valid is None
             else _checked_mask(valid, 'valid', prob.shape))
    # min/max are NaN if any value is NaN, so this also rejects NaN and inf.
    if not (prob.min() >= 0.0 and prob.max() <= 1.0):
        raise ValueError('prob must be finite and within [0, 1], got values '
                         'from %r to %r' % (prob.min(), prob.max()))
    return prob, road, valid


def _checked_mask(mask, name, shape):
    mask = np.asarray(mask)
    if mask.dtype != bool:
        raise ValueError('%s must be a bool array, got dtype %s'
                         % (name, mask.dtype))
    if mask.shape != shape:
        raise ValueError('%s has shape %s but prob has shape %s'
                         % (name, mask.shape, shape))
    return mask


def _image_counts(prob, road, valid):
    bins = _threshold_bins(prob)
    bins += road * NUM_THRESHOLDS  # road pixels fill the second histogram row
    histogram = np.bincount(bins[valid], minlength=2 * NUM_THRESHOLDS)
    predicted_road = (prob > IOU_THRESHOLD) & valid
    return _Counts(histogram.reshape(2, NUM_THRESHOLDS),
                   iou_tp=np.count_nonzero(predicted_road & road),
                   iou_fp=np.count_nonzero(predicted_road & ~road),
                   images=1)


def _threshold_bins(prob):
    """Per pixel, the index k of the highest threshold k/255 <= prob.

    floor(prob * 255) is never too low (floor(k/255 * 255) == k for every k in
    float64 and rounding is monotonic) but can be one too high when the
    product rounds up to the next integer; one exact comparison fixes that.
    Much faster than np.searchsorted on a 375x1242 image.
    """
    bins = (prob * 255.0).astype(np.intp)
    bins -= THRESHOLDS[bins] > prob
    return bins


def _metrics(counts):
    not_road_hist, road_hist = counts.histogram
    positives, negatives = int(road_hist.sum()), int(not_road_hist.sum())
    if positives + negatives == 0:
        raise ValueError('no valid pixels accumulated: call update() with at '
                         'least one pixel that is not don\'t-care first')
    iou = _iou(counts)
    if positives == 0:
        curve = dict.fromkeys(_CURVE_KEYS, np.nan)
    else:
        curve = _curve_metrics(_predicted_road(road_hist),
                               _predicted_road(not_road_hist),
                               positives, negatives)
    result = {'iou': float(iou)}
    result.update((key, float(value)) for key, value in curve.items())
    result['images'] = counts.images
    return result


def _iou(counts):
    """Road IoU of prob > IOU_THRESHOLD; NaN without road labelled or found.
    TP + FP + FN = TP + FP + (positives - TP)."""
    return _divide(counts.iou_tp, int(counts.histogram[1].sum()) + counts.iou_fp,
                   if_zero=np.nan)


def _predicted_road(histogram):
    """Per threshold k, the pixels with prob >= k/255 (bins k and above)."""
    return np.cumsum(histogram[::-1])[::-1]


def _curve_metrics(tp, fp, positives, negatives):
    """MaxF, AP and the MaxF operating point from per-threshold TP, FP."""
    precision, recall, f_measure = _pr_curve(tp, fp, positives)
    best = int(np.argmax(f_measure))
    return {
        'maxf': f_measure[best],
        'ap': _average_precision(precision, recall),
        'precision': precision[best],
        'recall': recall[best],
        'fpr': _divide(fp[best], negatives, if_zero=np.nan),
        'fnr': (positives - tp[best]) / positives,
        'threshold': THRESHOLDS[best],
    }


def _pr_curve(tp, fp, positives):
    """Precision, recall and F-measure per threshold."""
    precision = _divide(tp, tp + fp, if_zero=0.0)
    recall = tp / positives
    f_measure = _divide(2 * precision * recall, precision + recall,
                        if_zero=0.0)
    return precision, recall, f_measure


def _average_precision(precision, recall):
    """Pascal VOC 11-point interpolated AP over the thresholds' PR points.

    Every level is reached: at threshold 0 all pixels are road, recall 1.
    """
    reached = recall >= AP_RECALL_LEVELS[:, np.newaxis]
    return np.where(reached, precision, 0.0).max(axis=1).mean()


def _divide(numerator, denominator, if_zero):
    """numerator / denominator as float64, `if_zero` where denominator == 0."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.full(np.broadcast_shapes(numerator.shape, denominator.shape),
                  if_zero)
    return np.divide(numerator, denominator, out=out,
                     where=denominator != 0)


def format_table(results_by_name):
    """Fixed-width text table of result dicts, one row per name.

    E.g. `format_table({'all': m.result(), **m.per_category()})`. Metrics are
    in percent with two decimals as on the KITTI site; `thr` is the MaxF
    threshold as a probability.
    """
    names = [str(name) for name in results_by_name]
    name_width = max([len('set')] + [len(name) for name in names])
    header = ('%-*s %6s' % (name_width, 'set', 'images')
              + ''.join(' %6s' % title for title, _ in _TABLE_COLUMNS)
              + ' %6s' % 'thr')
    lines = [header]
    for name, result in zip(names, results_by_name.values()):
        lines.append('%-*s %6d' % (name_width, name, result['images'])
                     + ''.join(' %6.2f' % (100 * result[key])
                               for _, key in _TABLE_COLUMNS)
                     + ' %6.4f' % result['threshold'])
    return '\n'.join(lines)


class ClassIoU:
    """Per-class IoU from a confusion matrix over labelled pixels (multi-class datasets such as CamVid)."""

    def __init__(self, num_classes):
        self.confusion = np.zeros((num_classes, num_classes), np.int64)

    def update(self, predicted, actual, valid):
        """`predicted`, `actual`: HxW class ids; `valid`: HxW bool (False = unlabelled)."""
        n = len(self.confusion)
        self.confusion += np.bincount(actual[valid].astype(np.int64) * n + predicted[valid],
                                      minlength=n * n).reshape(n, n)

    def per_class(self):
        """IoU of every class (NaN for a class neither present nor predicted)."""
        true_positive = np.diag(self.confusion).astype(np.float64)
        union = self.confusion.sum(axis=0) + self.confusion.sum(axis=1) - true_positive
        with np.errstate(invalid='ignore', divide='ignore'):
            return true_positive / union

    def mean(self):
        """Mean IoU of the defined classes (as cityscapesScripts' getScoreAverage); NaN when none is."""
        per_class = self.per_class()
        defined = per_class[~np.isnan(per_class)]
        return float(defined.mean()) if defined.size else float('nan')
