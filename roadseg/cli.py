"""The command line: the flags of every command, the recipe that gives their defaults, their checks, and one line
per error. main.py hands its arguments here.

The training flags take their defaults from a recipe of roadseg.config, chosen once the command and the dataset
are known (train: KITTI's, or Cityscapes'; demo: the generated roads', or CamVid's). So argparse gives them no
defaults: what it returns is exactly what the command line gave (`args.given`), and the recipe fills the rest.
Nothing here imports TensorFlow: each command's module is imported when it runs (infer of an ONNX model needs
none).
"""
import argparse
import importlib
import math
import os
import sys

from roadseg import config, errors, process
from roadseg.data import datasets, splits
from roadseg.training import schedules

# The training flags that no recipe sets, and their defaults.
RUN_DEFAULTS = dict(data_dir='data', runs_dir='runs', vgg_dir=None, seed=0, freeze_encoder=False, xla=False,
                    mixed_precision=False, plain_malloc=False, val_drive=config.DEFAULT_VAL_DRIVE, verbose=False)
TRAIN_ONLY_DEFAULTS = dict(dataset='auto', classes='road', labels='kitti', val_fraction=config.DEFAULT_VAL_FRACTION,
                           val_cities=config.DEFAULT_VAL_CITIES, resume=None, vgg_source='udacity', kitti_url=None)
DATASETS = ('auto', 'kitti', 'camvid', 'cityscapes')

# command -> (module, function), imported when the command runs.
COMMANDS = {'train': ('roadseg.commands.train', 'train'), 'demo': ('roadseg.commands.train', 'demo'),
            'finish': ('roadseg.commands.finish', 'finish'), 'evaluate': ('roadseg.commands.evaluate', 'evaluate'),
            'infer': ('roadseg.commands.infer', 'infer'), 'export': ('roadseg.commands.export', 'export'),
            'submit': ('roadseg.commands.submit', 'submit'), 'plot': ('roadseg.commands.plot', 'plot'),
            'demo --folds': ('roadseg.commands.folds', 'leave_one_drive_out')}


def default_of(recipe, name):
    """The default of a training flag under `recipe`, as help text shows it."""
    value = recipe[name] if name in recipe else RUN_DEFAULTS.get(name, TRAIN_ONLY_DEFAULTS.get(name))
    if isinstance(value, bool):
        return 'on' if value else 'off'
    return ' '.join(map(str, value)) if isinstance(value, tuple) else str(value)


def _add_recipe_flags(parser, recipe):
    """The flags a recipe sets (their defaults named in the help: the recipe's, which the command may replace)."""
    def add(flag, help_text, **kwargs):
        name = flag[2:].replace('-', '_')
        parser.add_argument(flag, help='%s (default: %s)' % (help_text, default_of(recipe, name)), **kwargs)

    add('--epochs', 'epochs to train', type=int)
    add('--batch-size', 'images per training step', type=int)
    add('--learning-rate', 'Adam learning rate', type=float)
    add('--keep-prob', 'dropout keep probability of fc6/fc7 while training', type=float)
    add('--image-shape', 'network input size, multiples of %d' % config.OUTPUT_MULTIPLE, type=int, nargs=2,
        metavar=('H', 'W'))
    add('--skip-scales', 'factors on pool4 and pool3 before their scores', type=float, nargs=2,
        metavar=('POOL4', 'POOL3'))
    add('--clip-norm', 'clip the global gradient norm to this (0: no clipping)', type=float)
    add('--lr-schedule', 'the learning rate over the epochs after the warm-up: constant, or cosine from '
                         '--learning-rate down to 1/20 of it at the last epoch', choices=tuple(schedules.LR_SCHEDULES))
    add('--warmup-epochs', 'epochs over which the learning rate rises linearly towards --learning-rate, which the '
                           'next epoch reaches', type=int)
    add('--label-smoothing', "share of each labelled pixel's target spread evenly over the classes, so that the "
                             'loss stops rewarding ever larger logits', type=float, metavar='S')
    add('--lovasz-weight', 'weight of the Lovasz-softmax loss, a surrogate of 1 - IoU per image, added to the '
                           'cross-entropy (0: cross-entropy alone)', type=float, metavar='W')
    add('--adam-epsilon', "Adam's epsilon: weights whose gradients are much smaller than it take plain SGD steps "
                          'of rate/EPS instead of steps of about the rate', type=float, metavar='EPS')
    add('--late-adam-epsilon', "Adam's epsilon from halfway through the epochs after the warm-up on (0: "
                               '--adam-epsilon throughout)', type=float, metavar='EPS')
    add('--augment', 'random flips, zoom and colour jitter of the training images, within --zoom and '
                     '--color-jitter', action=argparse.BooleanOptionalAction)
    add('--flip-average', "the model's probabilities averaged with those of the mirrored image (twice the "
                          'inference work), in validation, the export and all it makes',
        action=argparse.BooleanOptionalAction)
    add('--scales', "the model's probabilities averaged over the image resized to each of these multiples of "
                    '--image-shape (each side rounded to a multiple of %d; 1: --image-shape alone), in validation, '
                    'the export and all it makes' % config.OUTPUT_MULTIPLE, type=float, nargs='+', metavar='S')
    add('--average-weights', 'the model is the mean of the weights at the end of each epoch after the warm-up '
                             '(stochastic weight averaging), not the last epoch\'s weights; validation sees the mean',
        action=argparse.BooleanOptionalAction)
    add('--zoom', 'with --augment: each training image is scaled by a random factor in [MIN, MAX], then cropped '
                  '(or, below 1, mirror-padded) back to its size', type=float, nargs=2, metavar=('MIN', 'MAX'))
    add('--color-jitter', 'with --augment: random saturation and contrast (x[1-S, 1+S]), gamma (in [e^-S, e^S]) '
                          'and brightness (+-100*S levels) of each training image; 0.2 is the classic brightness '
                          'and contrast jitter', type=float, metavar='S')
    add('--cutmix', 'with --augment: the share P of training images that get a box of another training image '
                    '(moved on its own) pasted in, its label with it (CutMix; 0: none)', type=float, metavar='P')


def _add_run_flags(parser, vgg_default):
    """The training flags no recipe sets."""
    parser.add_argument('--data-dir', help='where KITTI (data_road/) and vgg/ live, or a CamVid or Cityscapes '
                                           'folder (default: data)')
    parser.add_argument('--runs-dir', help='where run folders are written (default: runs)')
    parser.add_argument('--vgg-dir', help='a VGG16 SavedModel folder to use instead of the default (%s)'
                                          % vgg_default)
    parser.add_argument('--seed', type=int, help='random seed (default: 0)')
    parser.add_argument('--freeze-encoder', action='store_true',
                        help='train only the decoder (no gradients into VGG, fc6/fc7 included): for small GPUs')
    parser.add_argument('--xla', action='store_true', help='compile the graph with XLA (JIT)')
    parser.add_argument('--mixed-precision', action='store_true',
                        help='float16 (GPU, with loss scaling) or bfloat16 (CPU) compute, float32 weights')
    parser.add_argument('--plain-malloc', action='store_true',
                        help="leave glibc's malloc settings alone (docs/performance.md)")
    parser.add_argument('--val-drive', help='CamVid: the drive held out for validation, never trained on; %s: '
                                            'every drive trains and the last epoch is the model (default: %s)'
                        % (config.NO_VAL_DRIVE, config.DEFAULT_VAL_DRIVE))
    _add_verbose_flag(parser)


def _add_relocation_flags(parser):
    parser.add_argument('--data-dir', help="the run's data folder where it is now, if it has moved: the run is "
                                           'pointed at it once it holds all of its files (recorded in %s)'
                                           % config.RUN_CONFIG_FILE)
    parser.add_argument('--vgg-dir', help="the run's VGG16 SavedModel where it is now, if it has moved (recorded "
                                          'in %s)' % config.RUN_CONFIG_FILE)


def _add_verbose_flag(parser):
    parser.add_argument('--verbose', action='store_true',
                        help="also show TensorFlow's own log lines (or set %s=1)" % process.VERBOSE_VARIABLE)


def _add_train_parser(commands):
    parser = commands.add_parser('train', help='train on KITTI Road (the default command)',
                                 argument_default=argparse.SUPPRESS,
                                 description='Defaults are the KITTI recipe; on Cityscapes, --image-shape %s.'
                                             % default_of(config.CITYSCAPES_RECIPE, 'image_shape'))
    _add_recipe_flags(parser, config.KITTI_RECIPE)
    _add_run_flags(parser, '<data-dir>/vgg, downloaded if absent')
    parser.add_argument('--dataset', choices=DATASETS,
                        help='the layout of --data-dir; auto: cityscapes if it has leftImg8bit/ or gtFine/, camvid '
                             'if it has train/, trainannot/, val/, valannot/, else KITTI (default: auto)')
    _add_classes_flag(parser)
    parser.add_argument('--labels', choices=('kitti', 'mask'),
                        help='KITTI label format: kitti colours, or mask (road 255, else 0; every pixel counts) '
                             '(default: kitti)')
    parser.add_argument('--val-fraction', type=float,
                        help='share of each KITTI category held out for validation (default: 1/6; 0: no '
                             'validation, the last epoch is the model)')
    parser.add_argument('--val-cities', nargs='+', metavar='CITY',
                        help='Cityscapes: the train cities held out to choose the checkpoint, never trained on; val '
                             'is kept for the report (default: %s)' % ' '.join(config.DEFAULT_VAL_CITIES))
    parser.add_argument('--resume', metavar='RUN_DIR',
                        help='continue that run from its last checkpoint; %s may change, and --data-dir and '
                             '--vgg-dir point it at its data and VGG16 when they have moved'
                             % ', '.join(as_flag(name) for name in config.RunConfig.RESUMABLE))
    parser.add_argument('--vgg-source', choices=config.VGG_SOURCES,
                        help="where to get VGG16 if <data-dir>/vgg is absent: Udacity's vgg.zip (falling back to "
                             "keras when it fails) or Keras' ImageNet weights (default: udacity)")
    parser.add_argument('--kitti-url',
                        help='the data_road.zip link KITTI mails you: downloaded and unpacked if KITTI is absent')


def _add_classes_flag(parser):
    parser.add_argument('--classes', choices=('road', 'all'),
                        help='road: road vs the rest; all: every class of the dataset (CamVid, Cityscapes), with '
                             'per-class IoU and a colour palette in the overlays; road is still read from it '
                             '(default: road)')


def _add_demo_parser(commands):
    encoder = config.CAMVID_DEMO_VGG
    parser = commands.add_parser(
        'demo', help='offline demo: generated roads, or --data-dir <CamVid folder>', argument_default=argparse.SUPPRESS,
        description='The defaults below are those of the generated roads. With --data-dir <CamVid folder> the demo '
                    'trains the CamVid recipe instead: %s, from a %g-width random VGG with group norm (%d groups) '
                    'built in data/demo/%s if absent; flags given on the command line win.'
                    % (' '.join(as_flags(recipe_changes(config.GENERATED_DEMO_RECIPE, config.CAMVID_DEMO_RECIPE))),
                       encoder.width, encoder.norm_groups, encoder.folder))
    _add_recipe_flags(parser, config.GENERATED_DEMO_RECIPE)
    _add_run_flags(parser, 'data/demo/vgg, built with random weights if absent')
    parser.add_argument('--folds', action='store_true',
                        help='CamVid: leave-one-drive-out instead of one run: each drive of train/ and val/ held out '
                             'in turn by a run of these flags, and a table of the held-out road IoUs, their mean and '
                             'worst (into <runs-dir>/folds/; test/ is never read)')
    _add_classes_flag(parser)


def _add_model_commands(commands):
    finish = commands.add_parser('finish', help='export, test and overlay a run from its best checkpoint, without '
                                                'training more')
    finish.add_argument('run', metavar='RUN_DIR')
    _add_relocation_flags(finish)
    _add_verbose_flag(finish)
    evaluate = commands.add_parser('evaluate', help='road measures of a trained model')
    evaluate.add_argument('--model', required=True, help='a run folder, its export/ folder, or an .onnx file made by '
                                                             'python main.py export')
    evaluate.add_argument('--data-dir', default='data',
                          help='KITTI: every labelled image of <data-dir>/data_road/training; CamVid: the split '
                               '--split names; Cityscapes: its val split (default: data)')
    evaluate.add_argument('--split', choices=('val', 'test'), default=None,
                          help='CamVid split to measure (default: test when test/ exists, else val); Cityscapes: '
                               'val only, its test labels are not public')
    evaluate.add_argument('--json', action='store_true', help='also print one JSON object, last')
    evaluate.add_argument('--bev', action='store_true',
                          help="KITTI: also measure in the benchmark's bird's-eye view (needs the images' calib/ "
                               'files)')
    evaluate.add_argument('--plots', metavar='DIR', help='write the precision-recall curves and the worst images '
                                                         'as PNGs into DIR')
    evaluate.add_argument('--overwrite', action='store_true', help='replace the pictures --plots finds in DIR')
    _add_verbose_flag(evaluate)
    infer = commands.add_parser('infer', help='road overlays of new images and videos')
    infer.add_argument('--model', required=True,
                       help='a run folder, its export/ folder, or an .onnx file made by python main.py export (run '
                            'by onnxruntime, without TensorFlow)')
    infer.add_argument('inputs', nargs='+', metavar='INPUT',
                       help='image or video (mp4, mov, avi, mkv) files, folders or glob patterns; a video gives '
                            '<name>_overlay.mp4')
    infer.add_argument('--out', default=None, help='output folder (default: a new runs/<timestamp>)')
    infer.add_argument('--masks', action='store_true',
                       help='also write the road probability as 8-bit grey: <name>_road.png, or for a video '
                            '<name>_road.mp4')
    infer.add_argument('--overwrite', action='store_true', help='replace outputs that already exist')
    infer.add_argument('--bev', action='store_true',
                       help="also write the road probability in KITTI's bird's-eye view, <name>_bev.png, for images "
                            'in the KITTI layout (calibration in ../calib/<name>.txt)')
    _add_verbose_flag(infer)
    export = commands.add_parser('export', help="a run's model as ONNX, kept only if onnxruntime matches TensorFlow "
                                                'on it; or as int8 ONNX or TFLite, kept only if it scores as the '
                                                'float model does')
    export.add_argument('--model', required=True, help='a run folder, or its export/ folder')
    _add_export_form_flags(export)
    export.add_argument('--opset', type=int, default=config.ONNX_OPSET,
                        help='ONNX opset to convert to (default: %(default)s)')
    export.add_argument('--overwrite', action='store_true', help='replace FILE if it exists')
    _add_verbose_flag(export)
    commands.add_parser('bench', add_help=False, help='speed benchmark: data pipelines, training, inference, FLOP '
                                                      'ratios (python main.py bench --help)')


def _add_submit_and_plot(commands):
    submit = commands.add_parser('submit', help="the KITTI road benchmark's submission: every test image's road "
                                                "confidence in the bird's-eye view, and their zip")
    submit.add_argument('--model', required=True, help='a run folder, its export/ folder, or an .onnx file')
    submit.add_argument('--data-dir', default='data', help='where data_road/testing is (default: data)')
    submit.add_argument('--out', required=True, metavar='DIR', help='the folder to write the PNGs and the zip into')
    submit.add_argument('--overwrite', action='store_true', help='replace the files a submission finds in DIR')
    _add_verbose_flag(submit)
    plot = commands.add_parser('plot', help="draw a run's training curves again (training_curves.png)")
    plot.add_argument('run', metavar='RUN_DIR')
    _add_verbose_flag(plot)


def _add_export_form_flags(export):
    """export's forms: --onnx FILE (float32, or --int8), or --tflite FILE (--tflite-type), and their check."""
    form = export.add_mutually_exclusive_group(required=True)
    form.add_argument('--onnx', metavar='FILE', help='the ONNX file to write (e.g. model.onnx)')
    form.add_argument('--tflite', metavar='FILE', help='the TFLite file to write (e.g. model.tflite), for '
                                                       "TensorFlow's interpreter (run by infer and evaluate)")
    export.add_argument('--int8', action='store_true',
                        help="with --onnx: statically quantized with onnxruntime's tools (int8 weights per channel, "
                             'uint8 activations), calibrated on real images')
    export.add_argument('--tflite-type', choices=config.TFLITE_TYPES, default=None,
                        help='with --tflite: the weights as float32, float16 (half the file), or int8 (activations '
                             'too, calibrated; the rest float) (default: %s)' % config.DEFAULT_TFLITE_TYPE)
    export.add_argument('--calibration-images', metavar='DIR_OR_GLOB', default=None,
                        help='with --int8 or --tflite-type int8: the images to calibrate on (at most %d; default: the '
                             "run's validation and test images)" % config.CALIBRATION_IMAGES)
    export.add_argument('--max-change', type=float, default=None, metavar='POINTS',
                        help="with --int8 or --tflite: refuse the file if its road MaxF or IoU on the run's labelled "
                             "images differs by more than this many points (of 100) from the float model's, either "
                             'way (default: %g)' % config.DEPLOYED_MAX_CHANGE_POINTS)


def build_parser():
    parser = argparse.ArgumentParser(prog='main.py', description='FCN-8 road segmentation (KITTI Road, VGG16).')
    commands = parser.add_subparsers(dest='command')
    _add_train_parser(commands)
    _add_demo_parser(commands)
    _add_model_commands(commands)
    _add_submit_and_plot(commands)
    return parser


def as_flag(name):
    return '--' + name.replace('_', '-')


def as_flags(defaults):
    """{dest: value} as the command-line flags that give those values."""
    for name, value in defaults.items():
        if isinstance(value, bool):
            yield as_flag(name) if value else '--no-' + as_flag(name)[2:]
        else:
            yield ' '.join([as_flag(name)] + [str(item) for item in (value if isinstance(value, tuple) else [value])])


def recipe_changes(base, recipe):
    """The entries of `recipe` that differ from `base`."""
    return {name: value for name, value in recipe.items() if base.get(name) != value}


def parse_args(argv):
    argv = list(argv)
    if not argv or argv[0].startswith('-') and argv[0] not in ('-h', '--help'):
        argv.insert(0, 'train')
    args = build_parser().parse_args(argv)
    if args.command in ('train', 'demo'):
        apply_recipe(args)
        validate_training_args(args)
        if not args.resume:  # a resumed run's data is its run.json's: train.resume checks its flags
            splits.check_dataset_flags(args.command, args.found_dataset, args.given, args.found)
    elif args.command == 'evaluate' and args.split is not None and os.path.isdir(args.data_dir):
        dataset, found = splits.found_dataset(args.data_dir)
        splits.check_dataset_flags('evaluate', dataset, {'split'}, found)
    return args


def apply_recipe(args):
    """Fill the training flags the command line did not give from the recipe of the command and dataset."""
    args.given = set(vars(args)) - {'command'}
    defaults = dict(RUN_DEFAULTS, **(TRAIN_ONLY_DEFAULTS if args.command == 'train' else {}))
    for name, value in defaults.items():
        args.__dict__.setdefault(name, value)
    if args.command == 'demo':
        args.camvid = 'data_dir' in args.given and datasets.is_camvid(args.data_dir)
        args.labels, args.resume = 'kitti', None
        args.__dict__.setdefault('classes', 'road')
        recipe = config.CAMVID_DEMO_RECIPE if args.camvid else config.GENERATED_DEMO_RECIPE
        args.found_dataset = 'camvid' if args.camvid else 'generated'
        args.found = ('%s is a CamVid folder' % args.data_dir if args.camvid else
                      '%s is not a CamVid folder, so the demo trains on generated roads' % args.data_dir
                      if 'data_dir' in args.given else
                      'without --data-dir <a CamVid folder> the demo trains on generated roads')
    else:
        args.found_dataset, args.found = splits.found_dataset(args.data_dir, args.dataset)
        recipe = config.CITYSCAPES_RECIPE if args.found_dataset == 'cityscapes' else config.KITTI_RECIPE
    for name, value in recipe.items():
        if name not in args.given:
            setattr(args, name, value)
    args.image_shape, args.zoom, args.skip_scales = tuple(args.image_shape), tuple(args.zoom), tuple(args.skip_scales)
    args.scales = tuple(args.scales)


def validate_training_args(args):
    problems = [problem for check in (_check_sizes, _check_rates, _check_augmentation, _check_train_only,
                                      _check_demo_only)
                for problem in check(args)]
    if problems:
        raise errors.UserError('; '.join(problems))


def _finite(value, low, high=math.inf, low_included=True):
    return math.isfinite(value) and (value >= low if low_included else value > low) and value < high


def _check_sizes(args):
    if any(side <= 0 or side % config.OUTPUT_MULTIPLE for side in args.image_shape):
        yield ('--image-shape %d %d: both sides must be positive multiples of %d (e.g. 160 576)'
               % (args.image_shape + (config.OUTPUT_MULTIPLE,)))
    if args.epochs < 1:
        yield '--epochs must be >= 1'
    if args.batch_size < 1:
        yield '--batch-size must be >= 1'
    if args.warmup_epochs < 0:
        yield '--warmup-epochs must be >= 0'
    elif args.average_weights and args.epochs <= args.warmup_epochs:
        yield ('--average-weights averages the epochs after the warm-up: --epochs must be above --warmup-epochs '
               '(%d)' % args.warmup_epochs)


def _check_rates(args):
    if not 0 < args.keep_prob <= 1:
        yield '--keep-prob must be in (0, 1]'
    if not _finite(args.learning_rate, 0, low_included=False):
        yield '--learning-rate must be a finite number > 0'
    if not all(math.isfinite(scale) for scale in args.skip_scales):
        yield '--skip-scales must be finite numbers'
    if not _finite(args.clip_norm, 0):
        yield '--clip-norm must be a finite number >= 0'
    if not 0 <= args.label_smoothing < 1:
        yield '--label-smoothing must be in [0, 1)'
    if not _finite(args.adam_epsilon, 0, low_included=False):
        yield '--adam-epsilon must be a finite number > 0'
    if not _finite(args.lovasz_weight, 0):
        yield '--lovasz-weight must be a finite number >= 0'
    if not _finite(args.late_adam_epsilon, 0):
        yield '--late-adam-epsilon must be a finite number >= 0'


def _check_augmentation(args):
    if not (all(math.isfinite(zoom) for zoom in args.zoom) and 0 < args.zoom[0] <= args.zoom[1]):
        yield '--zoom MIN MAX must be finite with 0 < MIN <= MAX'
    if not 0 <= args.color_jitter < 1:
        yield '--color-jitter must be in [0, 1)'
    if not 0 <= args.cutmix <= 1:
        yield '--cutmix must be in [0, 1]'
    if not all(_finite(scale, 0, config.MAX_SCALE, low_included=False) for scale in args.scales):
        yield '--scales must be finite numbers > 0 and below %g' % config.MAX_SCALE


def _check_train_only(args):
    if args.command != 'train':
        return
    if args.classes == 'all' and args.found_dataset == 'kitti' and not args.resume:
        yield '--classes all needs a CamVid or Cityscapes dataset: %s, whose labels mark only road' % args.found
    if 'vgg_source' in args.given and 'vgg_dir' in args.given:
        yield ('--vgg-source says where to get VGG16 when --vgg-dir is not given; with --vgg-dir %s it does not '
               'apply: drop one of them' % args.vgg_dir)
    if not 0 <= args.val_fraction < 1:
        yield '--val-fraction must be in [0, 1)'


def _check_demo_only(args):
    if 'folds' in args.given and 'val_drive' in args.given:
        yield '--folds holds out each drive in turn, so --val-drive %s does not apply: drop it' % args.val_drive


def set_up_process(args):
    """Process-wide speed settings, before the first Session (see roadseg.process)."""
    if args.command in ('evaluate', 'infer', 'submit'):
        process.cache_kernel_layouts()
        return
    process.check_weights_not_frozen()
    if args.command in ('train', 'demo') and not args.plain_malloc:
        process.tune_malloc()


def run(argv=None, own_process=False):
    """The command line. `own_process`: main.py is the program, so process-wide settings may be made.

    (Called from other code, e.g. the tests, run changes nothing beyond its job.)
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if own_process:
        process.interrupt_on_termination()
    if argv[:1] == ['bench']:
        importlib.import_module('roadseg.commands.bench').main(argv[1:])
        return
    name = argv[0] if argv and not argv[0].startswith('-') else 'train'
    try:
        args = parse_args(argv)
        if own_process:
            set_up_process(args)
        module, function = COMMANDS['demo --folds' if getattr(args, 'folds', False) else args.command]
        getattr(importlib.import_module(module), function)(args)
    except (errors.UserError, KeyboardInterrupt, OSError) as error:
        if own_process:
            process.ignore_further_interrupts()  # a second Ctrl-C must not cut this message short
            if isinstance(error, KeyboardInterrupt):  # what it cut short (a half-built progress bar) may fail to
                sys.unraisablehook = lambda unraisable: None  # finalise: Python would print that as a traceback
        raise SystemExit('main.py %s: %s' % (name, one_line(error, name))) from None


def one_line(error, command='train'):
    """What main.py says when a job stops early: the error's own message, or for an interrupt or a failed
    write, what happened and what to do."""
    if isinstance(error, KeyboardInterrupt):
        if command in ('train', 'demo'):
            return ('interrupted. Nothing half-written was left behind; a training run continues with python '
                    'main.py train --resume RUN_DIR from its last completed epoch')
        return 'interrupted. Nothing half-written was left behind; run the same command again to do it all'
    if isinstance(error, OSError):
        trouble = errors.disk_trouble(error)
        if trouble is None:
            raise error
        return str(trouble)
    return str(error)
