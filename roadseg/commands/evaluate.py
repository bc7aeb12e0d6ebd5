"""python main.py evaluate: the road measures of a trained model on a labelled dataset (a table, and JSON)."""
import json
import math

from roadseg.data import cityscapes, datasets, splits
from roadseg.errors import DatasetError
from roadseg.evaluation import road_metrics, scoring
from roadseg.serving import files

EVALUATE_JSON_KEYS = ('iou', 'maxf', 'ap', 'precision', 'recall', 'fpr', 'fnr', 'images')


def evaluate(args):
    """python main.py evaluate: the road measures of a trained model (a run folder, its export/ or an .onnx file
    made by python main.py export; a table, and JSON with --json)."""
    exported = files.open_model(args.model)
    try:
        pairs, which = splits.evaluation_pairs(args.data_dir, args.split)
        fmt = _label_format(exported.info, args)
        metrics, class_iou = scoring.evaluate(exported, pairs, fmt.to_onehot)
    finally:
        exported.close()
    results = scoring.measured(metrics)
    print('evaluate: %s, %d images' % (which, len(pairs)))
    print(format_results(results))
    if class_iou:
        print(scoring.format_class_iou(class_iou, fmt.class_names))
    if args.json:
        report = json_report(results['all'], len(pairs))
        if class_iou:
            report.update(scoring.class_iou_json(class_iou, fmt.class_names))
        print(json.dumps(report))


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
