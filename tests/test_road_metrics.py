"""Tests of road_metrics against hand-computed KITTI road metrics."""
import math
import os

import numpy as np
import pytest

from roadseg.data.datasets import kitti_category
from roadseg.evaluation import road_metrics
from roadseg.evaluation.road_metrics import RESULT_KEYS, THRESHOLDS, RoadMetrics, format_table

# ../shared beside the checkout, wherever the checkout is.
KITTI_LABEL = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'shared',
                           'data', 'kitti_road_sample', 'data_road', 'training', 'gt_image_2', 'um_road_000000.png')

# 4x5 ground truth with 8 road pixels (P = 8, N = 20 pixels in total).
ROAD_8_OF_20 = np.array([[0, 0, 0, 0, 0],
                         [0, 1, 1, 0, 0],
                         [1, 1, 1, 1, 0],
                         [1, 1, 0, 0, 0]], dtype=bool)

# 4x4 case: 6 road pixels with probs 0.9 0.8 0.7 0.6 0.4 0.2 and 10 non-road
# pixels with probs 0.75 0.55 0.45 0.3 0.1 0.1 0.05 0 0 0.
CONFUSION_PROB = np.array([[0.9, 0.8, 0.75, 0.7],
                           [0.6, 0.55, 0.45, 0.4],
                           [0.3, 0.2, 0.1, 0.1],
                           [0.05, 0.0, 0.0, 0.0]])
CONFUSION_ROAD = np.array([[1, 1, 0, 1],
                           [1, 0, 0, 1],
                           [0, 1, 0, 0],
                           [0, 0, 0, 0]], dtype=bool)


def _evaluate(prob, road, valid=None):
    metrics = RoadMetrics()
    metrics.update(prob, road, valid)
    return metrics.result()


def _close(actual, expected):
    return math.isclose(actual, expected, rel_tol=0.0, abs_tol=1e-12)


def _random_image(rng, height, width):
    return rng.random((height, width)), rng.random((height, width)) < 0.4


def test_perfect_prediction():
    result = _evaluate(ROAD_8_OF_20.astype(float), ROAD_8_OF_20)
    assert result == {'iou': 1.0, 'maxf': 1.0, 'ap': 1.0, 'precision': 1.0,
                      'recall': 1.0, 'fpr': 0.0, 'fnr': 0.0,
                      # Thresholds 1/255..1 all separate the classes; the
                      # first of the tied maxima is reported.
                      'threshold': 1 / 255, 'images': 1}
    assert tuple(result) == RESULT_KEYS


def test_inverted_prediction():
    # prob 0 on the 8 road pixels, 1 on the 12 others. Only threshold 0 has
    # TP > 0: all 20 pixels are road there, precision 8/20 = 0.4, recall 1,
    # F = 2 * 0.4 * 1 / (0.4 + 1) = 4/7. At every higher threshold the
    # predicted road is the 12 non-road pixels: TP = 0, F = 0.
    # AP: every recall level is reached only at threshold 0 -> 0.4.
    # IoU at prob > 0.5: TP 0, FP 12, FN 8 -> 0 / 20 = 0.
    result = _evaluate(1.0 - ROAD_8_OF_20, ROAD_8_OF_20)
    assert _close(result['maxf'], 4 / 7)
    assert _close(result['ap'], 0.4)
    assert result['iou'] == 0.0
    assert result['threshold'] == 0.0
    assert _close(result['precision'], 0.4)
    assert result['recall'] == 1.0
    assert result['fpr'] == 1.0 and result['fnr'] == 0.0


def test_constant_prediction():
    # All pixels 0.7, 5 of 20 road. 0.7 lies in bin 178 (178/255 = 0.698 <=
    # 0.7 < 179/255 = 0.702), so thresholds 0..178 predict every pixel road:
    # precision = road fraction 5/20 = 0.25, recall 1,
    # F = 2 * 0.25 * 1 / 1.25 = 0.4; thresholds 179..255 predict nothing (F 0).
    # The first maximum is threshold 0. AP = 0.25 at every recall level.
    # IoU at prob > 0.5: TP 5, FP 15, FN 0 -> 5 / 20.
    road = np.zeros((4, 5), bool)
    road[0] = True
    assert road_metrics._threshold_bins(np.full((1, 1), 0.7))[0, 0] == 178
    result = _evaluate(np.full((4, 5), 0.7), road)
    assert result['precision'] == 0.25 and result['recall'] == 1.0
    assert _close(result['maxf'], 0.4)
    assert result['threshold'] == 0.0
    assert result['ap'] == 0.25
    assert result['iou'] == 0.25
    assert result['fpr'] == 1.0 and result['fnr'] == 0.0


def test_small_known_confusion():
    # Sorted probs (R road, N not): .9R .8R .75N .7R .6R .55N .45N .4R .3N .2R
    # .1N .1N .05N 0N 0N 0N. With F = 2TP / (2TP + FP + FN) the cuts give
    # 2/7, 1/2, 4/9, 6/10, 8/11, 8/12, 8/13, 10/14, 10/15, 12/16 (cut after
    # .2: TP 6, FP 4, FN 0), 12/18, 12/19, 12/22. MaxF = 12/16 = 0.75 on all
    # thresholds in (0.1, 0.2], the first is 26/255 (25/255 = 0.098 < 0.1).
    # There: PRE 6/10, REC 6/6, FPR 4/10, FNR 0/6.
    result = _evaluate(CONFUSION_PROB, CONFUSION_ROAD)
    assert _close(result['maxf'], 0.75)
    assert result['threshold'] == 26 / 255
    assert result['precision'] == 0.6 and result['recall'] == 1.0
    assert result['fpr'] == 0.4 and result['fnr'] == 0.0
    # At prob > 0.5: road .9 .8 .7 .6 -> TP 4; .75 .55 -> FP 2; .4 .2 -> FN 2.
    assert result['iou'] == 4 / (4 + 2 + 2)
    # (recall, precision) points: (1/6, 1) (2/6, 1) (2/6, 2/3) (3/6, 3/4)
    # (4/6, 4/5) (4/6, 4/6) (4/6, 4/7) (5/6, 5/8) (5/6, 5/9) (1, 6/10) ...
    # Max precision at recall >= 0, .1, .2, .3 is 1; at .4, .5, .6 is 4/5;
    # at .7, .8 is 5/8; at .9, 1 is 6/10.
    assert _close(result['ap'], (4 * 1 + 3 * 0.8 + 2 * 0.625 + 2 * 0.6) / 11)


def test_road_means_prob_at_or_above_threshold():
    # Road pixels exactly at 128/255, the others at 127/255: only with
    # "prob >= threshold" does threshold 128/255 separate them.
    road = ROAD_8_OF_20
    result = _evaluate(np.where(road, 128 / 255, 127 / 255), road)
    assert result['maxf'] == 1.0
    assert result['threshold'] == 128 / 255


def test_threshold_bins_are_exact_at_the_boundaries():
    below = np.nextafter(THRESHOLDS, -np.inf)[1:]
    above = np.nextafter(THRESHOLDS, np.inf)[:-1]
    prob = np.concatenate([THRESHOLDS, below, above,
                           np.random.default_rng(0).random(1000)])[np.newaxis]
    expected = np.searchsorted(THRESHOLDS, prob, side='right') - 1
    assert np.array_equal(road_metrics._threshold_bins(prob), expected)


def test_ap_uses_the_devkit_recall_levels():
    # 3 of 10 road pixels at 0.9, the other 7 with 7 non-road pixels at 0.5.
    # PR points: (0.3, 1) and (1, 10/17). The devkit's level
    # np.arange(0, 1.1, 0.1)[3] is 0.30000000000000004 > 0.3, so only the
    # levels 0, .1, .2 get precision 1 and the other 8 get 10/17.
    prob = np.array([[0.9] * 3 + [0.5] * 7 + [0.5] * 7])
    road = np.array([[True] * 10 + [False] * 7])
    assert _close(_evaluate(prob, road)['ap'], (3 + 8 * 10 / 17) / 11)


def test_matches_brute_force_threshold_sweep():
    rng = np.random.default_rng(1)
    prob, road = _random_image(rng, 30, 40)
    prob.flat[:256] = THRESHOLDS  # values exactly on the thresholds
    prob = prob.astype(np.float32)  # as the devkit reads probability PNGs
    valid = rng.random(prob.shape) < 0.9
    result = _evaluate(prob, road, valid)

    p, r = prob[valid].astype(np.float64), road[valid]
    tp = np.array([np.sum(r & (p >= t)) for t in THRESHOLDS])
    fp = np.array([np.sum(~r & (p >= t)) for t in THRESHOLDS])
    precision = np.array([a / (a + b) if a + b else 0.0
                          for a, b in zip(tp, fp)])
    recall = tp / r.sum()
    f = 2 * precision * recall / (precision + recall)
    best = int(np.argmax(f))
    ap = np.mean([precision[recall >= level].max()
                  for level in np.arange(0, 1.1, 0.1)])
    assert _close(result['maxf'], f[best])
    assert result['threshold'] == THRESHOLDS[best]
    assert _close(result['ap'], ap)
    assert _close(result['fpr'], fp[best] / np.sum(~r))
    assert _close(result['fnr'], 1 - recall[best])
    predicted = p > 0.5
    assert _close(result['iou'], np.sum(predicted & r)
                  / np.sum(predicted | r))


def test_dont_care_pixels_are_excluded():
    rng = np.random.default_rng(2)
    prob, road = _random_image(rng, 12, 16)
    valid = np.ones(prob.shape, bool)
    valid[8:] = False
    reference = _evaluate(prob, road, valid)
    changed_prob, changed_road = prob.copy(), road.copy()
    changed_prob[8:] = 1.0 - changed_prob[8:]
    changed_road[8:] = ~changed_road[8:]
    assert _evaluate(changed_prob, changed_road, valid) == reference
    assert _evaluate(prob[:8], road[:8]) == reference


def test_per_category_and_exact_accumulation():
    rng = np.random.default_rng(3)
    images = [_random_image(rng, height, 20) for height in (7, 11, 5)]
    names = ['um_000001.png', 'umm_000002.png', 'um_000003.png']
    metrics = RoadMetrics()
    for (prob, road), name in zip(images, names):
        metrics.update(prob, road, category=kitti_category(name))

    everything = _evaluate_stacked(images)
    um_only = _evaluate_stacked(images[::2])
    total, by_category = metrics.result(), metrics.per_category()
    assert total['images'] == 3 and everything['images'] == 1
    assert _without_images(total) == _without_images(everything)
    assert sorted(by_category) == ['um', 'umm']
    assert by_category['um']['images'] == 2
    assert _without_images(by_category['um']) == _without_images(um_only)
    assert by_category['umm'] == _evaluate(*images[1])


def _evaluate_stacked(images):
    """Metrics of one image made of all pixels of `images` stacked."""
    return _evaluate(np.concatenate([prob for prob, _ in images]),
                     np.concatenate([road for _, road in images]))


def _without_images(result):
    return {key: value for key, value in result.items() if key != 'images'}


def test_without_road_pixels_the_curve_is_undefined():
    result = _evaluate(np.full((2, 3), 0.2), np.zeros((2, 3), bool))
    assert result['images'] == 1
    assert result['iou'] != result['iou']  # NaN: no road, none predicted
    for key in ('maxf', 'ap', 'precision', 'recall', 'fpr', 'fnr',
                'threshold'):
        assert math.isnan(result[key]), key


def test_kitti_category():
    assert kitti_category('um_000012.png') == 'um'
    assert kitti_category('umm_road_000003.png') == 'umm'
    assert kitti_category('/data/training/image_2/uu_000099.png') == 'uu'
    assert kitti_category('uu_road_000000') == 'uu'
    assert kitti_category('um_lane_000000.png') is None
    assert kitti_category('umx_000001.png') is None
    assert kitti_category('road.png') is None


def test_format_table():
    perfect = _evaluate(ROAD_8_OF_20.astype(float), ROAD_8_OF_20)
    header, all_row, um_row = format_table({'all': perfect,
                                            'um': perfect}).splitlines()
    assert header.split() == ['set', 'images', 'IoU', 'MaxF', 'AP', 'PRE',
                              'REC', 'FPR', 'FNR', 'thr']
    assert all_row.split() == ['all', '1', '100.00', '100.00', '100.00',
                               '100.00', '100.00', '0.00', '0.00', '0.0039']
    assert len(header) == len(all_row) == len(um_row)


def test_bad_input_raises_value_error():
    prob, road = np.full((3, 4), 0.5), np.eye(3, 4, dtype=bool)
    metrics = RoadMetrics()
    with pytest.raises(ValueError):
        metrics.result()  # nothing accumulated yet
    bad_calls = [
        (prob, road[:2]),                      # road shape mismatch
        (prob, road, np.ones((4, 3), bool)),   # valid shape mismatch
        (prob[np.newaxis], road[np.newaxis]),  # not HxW
        (prob, road.astype(int)),              # labels not bool
        (prob + 0.6, road),                    # above 1
        (prob - 0.6, road),                    # below 0
        (np.where(road, np.nan, prob), road),  # NaN
        (np.where(road, np.inf, prob), road),  # inf
    ]
    for args in bad_calls:
        with pytest.raises(ValueError):
            metrics.update(*args)
    with pytest.raises(ValueError):
        metrics.result()  # failed updates added nothing
    metrics.update(prob, road, np.zeros((3, 4), bool))
    with pytest.raises(ValueError):
        metrics.result()  # only don't-care pixels


def test_real_kitti_label_as_perfect_prediction():
    if not os.path.exists(KITTI_LABEL):
        pytest.skip('KITTI sample label not found: ' + KITTI_LABEL)
    import imageio.v3 as iio
    label = iio.imread(KITTI_LABEL)
    # RGB: road (255, 0, 255), not road (255, 0, 0), don't care: red 0.
    road, valid = label[..., 2] > 0, label[..., 0] > 0
    metrics = RoadMetrics()
    metrics.update(road.astype(np.float32), road, valid,
                   category=kitti_category(KITTI_LABEL))
    assert metrics.result()['maxf'] == 1.0
    assert metrics.per_category()['um']['iou'] == 1.0


def test_class_iou_from_the_confusion_matrix():
    predicted = np.array([[0, 0, 1], [1, 2, 2]])
    actual = np.array([[0, 1, 1], [1, 2, 0]])
    valid = np.array([[True, True, True], [True, True, False]])  # the last pixel is unlabelled
    class_iou = road_metrics.ClassIoU(3)
    class_iou.update(predicted, actual, valid)
    # class 0: TP 1 (pixel 0), FP 1 (pixel 1 predicted 0, is 1) -> 1/2; class 1: TP 2, FN 1 -> 2/3; class 2: 1/1.
    assert np.allclose(class_iou.per_class(), [1 / 2, 2 / 3, 1.0])
    assert abs(class_iou.mean() - (1 / 2 + 2 / 3 + 1) / 3) < 1e-12
