"""python main.py evaluate: the road measures of a trained model on a labelled dataset (a table, and JSON)."""
import json
import math
import os

from roadseg import config
from roadseg.commands import infer
from roadseg.data import cityscapes, datasets, splits
from roadseg.errors import DatasetError, OutputError
from roadseg.evaluation import bev, plots, road_metrics, scoring
from roadseg.serving import files

EVALUATE_JSON_KEYS = ('iou', 'maxf', 'ap', 'precision', 'recall', 'fpr', 'fnr', 'images')
# What the bird's-eye view table is measured on, said above it.
BEV_GRID = ("the KITTI benchmark's bird's-eye view: the road plane %g to %g m ahead, %g to %g m across, in %g m "
            'cells' % (config.BEV_Z_RANGE + config.BEV_X_RANGE + (config.BEV_RESOLUTION,)))


def evaluate(args):
    """python main.py evaluate: the road measures of a trained model (a run folder, its export/ or an .onnx file
    made by python main.py export; a table, and JSON with --json); with --bev in the bird's-eye view too, with
    --plots DIR its PR curves and worst images as pictures."""
    if args.plots:
        plan = {args.model: [os.path.join(args.plots, name) for name in plots.evaluation_plot_files()]}
        infer.check_outputs(plan, [], args.plots, args.overwrite, flag='--plots')
    exported = files.open_model(args.model)
    try:
        pairs, which = splits.evaluation_pairs(args.data_dir, args.split)
        fmt = _label_format(exported.info, args)
        bev_scores = _bev_scores(pairs) if args.bev else None
        metrics, class_iou = scoring.evaluate(exported, pairs, fmt.to_onehot, bev_scores=bev_scores)
        written = _plots(args.plots, exported, pairs, fmt, metrics, which, bev_scores) if args.plots else []
    finally:
        exported.close()
    results = scoring.measured(metrics)
    print('evaluate: %s, %d images' % (which, len(pairs)))
    print(format_results(results))
    if class_iou:
        print(scoring.format_class_iou(class_iou, fmt.class_names))
    if bev_scores:
        print('evaluate: the same in %s; on the %d of those %d images that have calibration files'
              % (BEV_GRID, bev_scores.scored, len(pairs)))
        print(format_results(bev_results(bev_scores.metrics)))
    if written:
        print('evaluate: wrote %s' % ', '.join(written))
    if args.json:
        report = json_report(results['all'], len(pairs))
        if class_iou:
            report.update(scoring.class_iou_json(class_iou, fmt.class_names))
        if bev_scores:
            report['bev'] = json_report(bev_results(bev_scores.metrics)['URBAN'], bev_scores.scored)
        print(json.dumps(report))


def _plots(out_dir, exported, pairs, fmt, metrics, which, bev_scores):
    """evaluate --plots: the pictures of this evaluation in `out_dir` (made if absent); returns their paths."""
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as error:
        raise OutputError('cannot create --plots %s (%s); choose a folder you can write to'
                          % (out_dir, error.strerror)) from error
    return plots.write_evaluation_plots(out_dir, exported, pairs, fmt.to_onehot, metrics, which,
                                        bev_scores and bev_scores.metrics)


def _bev_scores(pairs):
    """The bird's-eye view scores of the images of `pairs` that have calibration files; those without are said in
    a line, and none at all is refused."""
    images = [image for image, _ in pairs]
    scores = bev.BevScores(images)
    if not scores.scored:
        raise DatasetError('--bev needs the calibration file of each image (data_road/<split>/calib/<name>.txt, '
                           'from data_road.zip) and none of the %d images has one: %s'
                           % (len(images), bev.describe_missing(scores.missing)))
    if scores.missing:
        print('evaluate: %d of %d images have no calibration file in calib/ and are left out of the bird\'s-eye '
              'view: %s' % (len(scores.missing), len(images), bev.describe_missing(scores.missing)))
    return scores


def bev_results(metrics):
    """scoring.measured(metrics) with the set of all images named URBAN, as the KITTI benchmark names it."""
    return {('URBAN' if name == 'all' else name): result for name, result in scoring.measured(metrics).items()}


def json_report(result, images):
    """evaluate's JSON of the result of all images: null where a measure is undefined, every measure null when
    every pixel is don't care (result None)."""
    report = {key: _json_number((result or {}).get(key)) for key in EVALUATE_JSON_KEYS}
    if result is None:
        report['images'] = images
    return report


def _label_format(info, args):
    """How --data-dir's labels read for a model trained on `info`; DatasetError when they cannot score it."""
    fmt = datasets.label_format(_label_dataset(info.dataset, args), info.classes)
    if tuple(fmt.class_names) != tuple(info.class_names):
        raise DatasetError('the model tells %d classes apart (trained on %s, --classes %s) and the labels of %s %d '
                           'others; evaluate it on its own kind of data (a road model evaluates on any dataset)'
                           % (info.num_classes, info.dataset, info.classes, args.data_dir, fmt.num_classes))
    return fmt


def _label_dataset(trained_on, args):
    """The labels of --data-dir are read in the format of its layout (the model may come from another)."""
    if cityscapes.is_cityscapes(args.data_dir):
        return 'cityscapes'
    if datasets.is_camvid(args.data_dir):
        return 'camvid'
    return 'kitti-mask' if trained_on == 'kitti-mask' else 'kitti'


def format_results(results):
    defined = {name: result for name, result in results.items() if result}
    lines = [road_metrics.format_table(defined)] if defined else []
    lines += ['%s: every pixel is don\'t care, nothing to measure' % name for name, r in results.items() if not r]
    if any(result and math.isnan(result['maxf']) for result in results.values()):
        lines.append('nan: no road pixel in those labels, so MaxF, AP, precision and recall are undefined')
    return '\n'.join(lines)


def _json_number(value):
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else value
