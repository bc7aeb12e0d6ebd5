"""The jobs that need TensorFlow: train, demo, finish and evaluate (main.py parses their flags)."""
import json
import math
import os

import atomic
import cityscapes
import datasets
import downloads
import evaluation
import inference
import process_tuning
import road_metrics
import roadgen
import run_folder
import training
import vgg_builder
from config import CAMVID_DEMO_VGG, GENERATED_DEMO_VGG, RunConfig
from errors import DatasetError, RunFolderError, TrainingDiverged
from tfv1 import tf

EVALUATE_JSON_KEYS = ('iou', 'maxf', 'ap', 'precision', 'recall', 'fpr', 'fnr', 'images')
# Settings a run's model or data depend on: --resume refuses to change them.
FIXED_ON_RESUME = ('data_dir', 'vgg_dir', 'image_shape', 'skip_scales', 'seed', 'freeze_encoder', 'mixed_precision',
                   'dataset', 'classes', 'val_fraction', 'val_drive', 'val_cities', 'labels', 'vgg_source',
                   'kitti_url')
# What a run's labelled "test" images are, where they are not a test split.
TEST_SET_NAMES = {'cityscapes': 'Cityscapes val images (its test labels are not public; no run trains or chooses '
                                'its checkpoint on val)'}


# --------------------------------------------------------------------------- datasets of a run

def detect_dataset(args):
    if args.dataset != 'auto':
        return args.dataset
    if cityscapes.is_cityscapes(args.data_dir):
        return 'cityscapes'
    return 'camvid' if datasets.is_camvid(args.data_dir) else 'kitti'


def camvid_splits(root, val_drive):
    """(train, validation, test) of a CamVid folder: validation is one whole drive that is never trained on."""
    pool = datasets.camvid_pairs(root, 'train') + datasets.camvid_pairs(root, 'val')
    val = [pair for pair in pool if datasets.camvid_drive(pair[0]) == val_drive]
    if not val:
        raise DatasetError('no images of drive %s in %s/train or val: choose --val-drive among %s'
                           % (val_drive, root, ', '.join(sorted({datasets.camvid_drive(p) for p, _ in pool}))))
    train = [pair for pair in pool if datasets.camvid_drive(pair[0]) != val_drive]
    test = datasets.camvid_pairs(root, 'test') if datasets.has_camvid_test(root) else []
    return train, val, test


def kitti_splits(args):
    data_road = downloads.maybe_download_kitti(args.data_dir, args.kitti_url)
    train, val = datasets.split_pairs(datasets.kitti_road_pairs(os.path.join(data_road, 'training')),
                                      args.val_fraction)
    return data_road, train, val, [], datasets.kitti_test_images(data_road)


def training_data(args):
    """(dataset, root, train, validation, labelled test, images to overlay) of --data-dir.

    Cityscapes' own default --image-shape is applied here, where the dataset becomes known.
    """
    dataset = detect_dataset(args)
    if dataset == 'cityscapes':
        splits = cityscapes.run_splits(args.data_dir, args.val_cities)
        if 'image_shape' not in args.given:
            args.image_shape = cityscapes.DEFAULT_IMAGE_SHAPE
        print(cityscapes.describe(splits, args.val_cities, args.image_shape))
        return dataset, args.data_dir, splits.train, splits.val, splits.test, splits.overlays
    if dataset == 'camvid':
        train, val, test = camvid_splits(args.data_dir, args.val_drive)
        return dataset, args.data_dir, train, val, test, [image for image, _ in (test or val)]
    if args.labels == 'mask':
        dataset = 'kitti-mask'
    data_road, train, val, test, overlays = kitti_splits(args)
    if not train:
        raise DatasetError('--val-fraction %g leaves no training images (of %d); lower it'
                           % (args.val_fraction, len(train) + len(val)))
    return dataset, data_road, train, val, test, overlays


def run_config(args, dataset, data_root, vgg_path, train, val, test, test_images):
    return RunConfig(
        dataset=dataset, classes=args.classes, data_root=os.path.abspath(data_root),
        vgg_path=os.path.abspath(vgg_path), image_shape=tuple(args.image_shape), batch_size=args.batch_size,
        learning_rate=args.learning_rate, keep_prob=args.keep_prob, skip_scales=tuple(args.skip_scales),
        seed=args.seed, epochs=args.epochs, augment=args.augment, freeze_encoder=args.freeze_encoder,
        xla=args.xla, mixed_precision=args.mixed_precision, clip_norm=args.clip_norm, zoom=tuple(args.zoom),
        color_jitter=args.color_jitter, lr_schedule=args.lr_schedule, warmup_epochs=args.warmup_epochs,
        label_smoothing=args.label_smoothing, adam_epsilon=args.adam_epsilon,
        late_adam_epsilon=args.late_adam_epsilon,
        train=[tuple(map(os.path.abspath, pair)) for pair in train],
        val=[tuple(map(os.path.abspath, pair)) for pair in val],
        test=[tuple(map(os.path.abspath, pair)) for pair in test],
        test_images=[os.path.abspath(path) for path in test_images])


# --------------------------------------------------------------------------- jobs

def train_new_run(args, config):
    """Check the data, make the run's folder, train and finish; a run that fails before its first checkpoint
    leaves no folder behind."""
    for warning in training.check_run_data(config):
        print(warning)
    announce_device(config)
    run = run_folder.RunFolder(atomic.new_timestamped_folder(args.runs_dir))
    try:
        with run.owned():
            run.write_config(config)
            return run, train_and_finish(run, config)
    except BaseException:
        run.remove_if_nothing_trained()
        raise


def announce_device(config):
    """Say which device trains. Before TensorFlow first looks at its devices: XLA's CPU switch is read then."""
    if config.xla:
        process_tuning.let_xla_cluster_on_cpu()
    print(process_tuning.describe_device(tf))


def train_and_finish(run, config):
    """Train, then export/test/overlay the chosen checkpoint; a diverged run is finished from its best too."""
    try:
        training.fit(run, config)
    except TrainingDiverged as error:
        if training.chosen_checkpoint(run) is None:
            raise
        training.finish_run(run, config)
        raise TrainingDiverged('%s. Nothing trained is lost: the run was finished from its best checkpoint '
                               '(export, overlays) in %s' % (error, run.path)) from error
    return training.finish_run(run, config)


def train(args):
    """The main job: KITTI Road (or CamVid) + pretrained VGG16, or --resume RUN_DIR."""
    if args.resume:
        run, config, results = resume(args)
    else:
        dataset, data_root, train_pairs, val, test, overlays = training_data(args)
        vgg_path = args.vgg_dir or downloads.ensure_vgg(args.data_dir, args.vgg_source)
        config = run_config(args, dataset, data_root, vgg_path, train_pairs, val, test, overlays)
        run, results = train_new_run(args, config)
    print('train: done, %s, model and overlays in %s' % (test_summary(results, config), run.path))


def test_summary(results, config):
    if not results:
        return 'no labelled test images'
    classes = ', mean class IoU %.3f' % results['miou'] if 'miou' in results else ''
    return 'test road IoU %.3f (MaxF %.3f)%s on %d %s' % (results['iou'], results['maxf'], classes, len(config.test),
                                                         TEST_SET_NAMES.get(config.dataset, 'test images'))


def resume(args):
    """Continue the run of --resume, with the flags given now (those a run may change) applied and recorded."""
    run = run_folder.RunFolder.existing(args.resume)
    refused = sorted(args.given & set(FIXED_ON_RESUME))
    if refused:
        raise RunFolderError('%s cannot change on --resume (the run\'s model and data depend on it); start a new '
                             'run instead' % ', '.join('--' + name.replace('_', '-') for name in refused))
    with run.owned():
        config = resumed_config(run, args)
        announce_device(config)
        return run, config, train_and_finish(run, config)


def resumed_config(run, args):
    config = run.read_config()
    last = run.checkpoint('last')
    done = last[1]['epoch'] if last else 0
    if 'epochs' in args.given and args.epochs < done:
        raise RunFolderError('%s has already trained %d epochs; --epochs must be at least that (to finish it '
                             'without training: python main.py finish %s)' % (run.path, done, run.path))
    changed = {name: getattr(args, name) for name in RunConfig.RESUMABLE if name in args.given}
    for name, value in changed.items():
        setattr(config, name, value)
    if changed:
        run.write_config(config)
        print('Resuming with %s (recorded in run.json)' % ', '.join('%s=%s' % item for item in changed.items()))
    return config


def finish(args):
    """python main.py finish RUN: the run's model from its best checkpoint, without training more."""
    run = run_folder.RunFolder.existing(args.run)
    with run.owned():
        config = run.read_config()
        results = training.finish_run(run, config)
    print('finish: %s, model and overlays in %s' % (test_summary(results, config), run.path))


# The generated-roads demo: 520 labelled scenes, of which one in 13 validate and one in 13 test (about 40
# each); 12 unlabelled scenes at KITTI's test sizes for the overlays.
DEMO_LABELLED_IMAGES = 520
DEMO_HELD_OUT_SHARE = 1 / 13
DEMO_OVERLAY_IMAGES = 12


def demo(args):
    """Offline end to end: a small random VGG16-shaped encoder, trained, chosen on validation, scored on test."""
    demo_dir = os.path.join(args.data_dir, 'demo') if not args.camvid else os.path.join('data', 'demo')
    vgg_folder, vgg_width = CAMVID_DEMO_VGG if args.camvid else GENERATED_DEMO_VGG
    vgg_path = args.vgg_dir or os.path.join(demo_dir, vgg_folder)
    if args.vgg_dir is None and not downloads.vgg_is_complete(vgg_path):
        vgg_builder.write_random_vgg16(vgg_path, width=vgg_width, seed=args.seed)
    if args.camvid:
        train_pairs, val, test = camvid_splits(args.data_dir, args.val_drive)
        config = run_config(args, 'camvid', args.data_dir, vgg_path, train_pairs, val, test,
                            [image for image, _ in (test or val)])
    else:
        config = generated_roads_config(args, demo_dir, vgg_path)
    run, results = train_new_run(args, config)
    if results:
        print('demo: test road IoU %.2f on %d test images, overlays in %s' % (results['iou'], len(config.test),
                                                                             run.path))
    else:
        validation = run.checkpoint('best')[1]['validation']
        print('demo: no test/ split in %s; validation road IoU %.2f on %d images of drive %s (the checkpoint was '
              'chosen on them), overlays in %s' % (args.data_dir, validation['iou'], len(config.val),
                                                   args.val_drive, run.path))


def generated_roads_config(args, demo_dir, vgg_path):
    data_road = roadgen.ensure_dataset(demo_dir, n_train=DEMO_LABELLED_IMAGES, n_test=DEMO_OVERLAY_IMAGES,
                                       seed=args.seed)
    pairs = datasets.kitti_road_pairs(os.path.join(data_road, 'training'))
    rest, test = datasets.split_pairs(pairs, DEMO_HELD_OUT_SHARE)
    train_pairs, val = datasets.split_pairs(rest, len(test) / len(rest))
    return run_config(args, 'kitti', data_road, vgg_path, train_pairs, val, test,
                      datasets.kitti_test_images(data_road))


def evaluation_pairs(args):
    """(labelled pairs, a sentence saying which they are) for evaluate's --data-dir and --split."""
    if cityscapes.is_cityscapes(args.data_dir):
        return cityscapes.evaluation_pairs(args.data_dir, args.split)
    if datasets.is_camvid(args.data_dir):
        split = args.split or ('test' if datasets.has_camvid_test(args.data_dir) else 'val')
        if split == 'test' and not datasets.has_camvid_test(args.data_dir):
            raise DatasetError('%s has no test/ and testannot/ folders; use --split val' % args.data_dir)
        note = '' if split == 'test' or args.split else ' (there is no test/ split here)'
        return datasets.camvid_pairs(args.data_dir, split), 'CamVid %s split%s' % (split, note)
    data_road = downloads.maybe_download_kitti(args.data_dir)
    return (datasets.kitti_road_pairs(os.path.join(data_road, 'training')),
            'all labelled KITTI training images (KITTI\'s test labels are not public)')


def evaluate(args):
    """python main.py evaluate: the road measures of a trained model (a table, and JSON with --json)."""
    exported = inference.ExportedModel(args.model)
    try:
        pairs, which = evaluation_pairs(args)
        fmt = _label_format(exported.info, args)
        metrics, class_iou = evaluation.evaluate(exported, pairs, fmt.to_onehot)
    finally:
        exported.close()
    results = measured(metrics)
    print('evaluate: %s, %d images' % (which, len(pairs)))
    print(format_results(results))
    if class_iou:
        print(evaluation.format_class_iou(class_iou, fmt.class_names))
    if args.json:
        report = {key: _json_number(results['all'].get(key)) for key in EVALUATE_JSON_KEYS}
        if class_iou:
            report.update(evaluation.class_iou_json(class_iou, fmt.class_names))
        print(json.dumps(report))


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


def format_results(results):
    defined = {name: result for name, result in results.items() if result}
    lines = [road_metrics.format_table(defined)] if defined else []
    lines += ['%s: every pixel is don\'t care, nothing to measure' % name for name, r in results.items() if not r]
    if any(result and math.isnan(result['maxf']) for result in results.values()):
        lines.append('nan: no road pixel in those labels, so MaxF, AP, precision and recall are undefined')
    return '\n'.join(lines)


def _json_number(value):
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else value
