"""FCN-8 road segmentation on a pretrained VGG16, in TensorFlow 1.x graph style: the command line.

    python main.py [train] [flags]   train on KITTI Road (or CamVid, Cityscapes), write the run's model and overlays
    python main.py demo [flags]      the same, offline: generated roads (or --data-dir CamVid), a small random VGG
    python main.py finish RUN        export, test and overlay a run from its best checkpoint, without training
    python main.py evaluate|infer    measures of a trained model; overlays of new images and videos
    python main.py export --model RUN --onnx F.onnx   the run's model as ONNX, checked against TensorFlow
    python main.py bench [flags]     speed benchmark (bench.py)

The classic exercise's functions live in model.py (load_vgg, layers, optimize) and training.py
(train_nn); main.load_vgg etc. reach them, as the classic project_tests.py expects. TensorFlow is imported
only by the jobs that need it, so that infer with an ONNX model runs where TensorFlow is not installed.
"""
import argparse
import importlib
import math
import signal
import sys

import quiet

if __name__ == '__main__':  # before TensorFlow loads: its first log lines come at import
    quiet.show_everything() if quiet.verbose_requested(sys.argv) else quiet.filter_native_stderr()

import batches  # noqa: E402
import cityscapes  # noqa: E402
import config  # noqa: E402
import datasets  # noqa: E402
import errors  # noqa: E402
import process_tuning  # noqa: E402

# The classic names main.load_vgg, main.layers, main.optimize, main.train_nn and main.tf (the test's tf_module).
CLASSIC_NAMES = {'load_vgg': 'model', 'layers': 'model', 'optimize': 'model', 'train_nn': 'training', 'tf': 'tfv1'}
# model.OUTPUT_MULTIPLE, model.AT_ONCE_SKIP_SCALES and model.ADAM_EPSILON, kept here so that parsing flags needs
# no TensorFlow.
OUTPUT_MULTIPLE = 8
AT_ONCE_SKIP_SCALES = (0.01, 0.0001)
ADAM_EPSILON = 1e-8


def __getattr__(name):
    """The classic functions, loaded (with TensorFlow) on first use."""
    if name in CLASSIC_NAMES:
        return getattr(importlib.import_module(CLASSIC_NAMES[name]), name)
    raise AttributeError('module %r has no attribute %r' % (__name__, name))

# --------------------------------------------------------------------------- command line

DEFAULT_VAL_FRACTION = 1 / 6
# The classic jitter ranges (batches.Augmentation), as flag defaults.
CLASSIC_AUGMENTATION = dict(zoom=list(batches.Augmentation.zoom), color_jitter=batches.Augmentation.color)
TRAIN_DEFAULTS = dict(vgg='<data-dir>/vgg, downloaded if absent', epochs=25, batch_size=8, learning_rate=1e-4,
                      keep_prob=0.5, image_shape=[160, 576], skip_scales=list(AT_ONCE_SKIP_SCALES), augment=True,
                      clip_norm=0.0, image_shape_note='; Cityscapes: %d %d' % cityscapes.DEFAULT_IMAGE_SHAPE,
                      lr_schedule='constant', warmup_epochs=0, label_smoothing=0.0, adam_epsilon=ADAM_EPSILON,
                      late_adam_epsilon=0.0, **CLASSIC_AUGMENTATION)
DEMO_DEFAULTS = dict(vgg='data/demo/vgg, built with random weights if absent', epochs=15, batch_size=8,
                     learning_rate=3e-4, keep_prob=1.0, image_shape=[96, 320], skip_scales=[1.0, 1.0],
                     augment=False, clip_norm=0.0, image_shape_note='', lr_schedule='constant', warmup_epochs=0,
                     label_smoothing=0.0, adam_epsilon=ADAM_EPSILON, late_adam_epsilon=0.0, **CLASSIC_AUGMENTATION)
# demo --data-dir <CamVid folder>: the offline recipe chosen on held-out drives (README, "Real roads on a CPU:
# CamVid"). These replace DEMO_DEFAULTS there; flags given on the command line win.
CAMVID_DEMO_DEFAULTS = dict(epochs=30, image_shape=[176, 240], learning_rate=1e-4, augment=True,
                            zoom=CLASSIC_AUGMENTATION['zoom'], color_jitter=0.4, lr_schedule='cosine',
                            warmup_epochs=2, clip_norm=1.0, label_smoothing=0.1, late_adam_epsilon=1e-2)


def _add_training_flags(parser, defaults):
    parser.add_argument('--data-dir', default='data', help='where KITTI (data_road/) and vgg/ live, or a CamVid '
                                                           'or Cityscapes folder (default: data)')
    parser.add_argument('--runs-dir', default='runs', help='where run folders are written (default: runs)')
    parser.add_argument('--vgg-dir', default=None,
                        help='a VGG16 SavedModel folder to use instead of the default (%s)' % defaults['vgg'])
    parser.add_argument('--epochs', type=int, default=defaults['epochs'], help='(default: %(default)s)')
    parser.add_argument('--batch-size', type=int, default=defaults['batch_size'], help='(default: %(default)s)')
    parser.add_argument('--learning-rate', type=float, default=defaults['learning_rate'],
                        help='Adam learning rate (default: %(default)s)')
    parser.add_argument('--keep-prob', type=float, default=defaults['keep_prob'],
                        help='dropout keep probability of fc6/fc7 while training (default: %(default)s)')
    parser.add_argument('--image-shape', type=int, nargs=2, metavar=('H', 'W'), default=defaults['image_shape'],
                        help='network input size, multiples of %d (default: %%(default)s%s)'
                             % (OUTPUT_MULTIPLE, defaults['image_shape_note']))
    parser.add_argument('--skip-scales', type=float, nargs=2, metavar=('POOL4', 'POOL3'),
                        default=defaults['skip_scales'],
                        help='factors on pool4 and pool3 before their scores (default: %(default)s)')
    parser.add_argument('--clip-norm', type=float, default=defaults['clip_norm'],
                        help='clip the global gradient norm to this (0: no clipping; default: %(default)s)')
    parser.add_argument('--lr-schedule', choices=config.LR_SCHEDULES, default=defaults['lr_schedule'],
                        help='the learning rate over the epochs after the warm-up: constant, or cosine from '
                             '--learning-rate down to 1/20 of it at the last epoch (default: %(default)s)')
    parser.add_argument('--warmup-epochs', type=int, default=defaults['warmup_epochs'],
                        help='epochs over which the learning rate rises linearly towards --learning-rate, which '
                             'the next epoch reaches (default: %(default)s)')
    parser.add_argument('--label-smoothing', type=float, metavar='S', default=defaults['label_smoothing'],
                        help='share of each labelled pixel\'s target spread evenly over the classes, so that the '
                             'loss stops rewarding ever larger logits (default: %(default)s)')
    parser.add_argument('--adam-epsilon', type=float, metavar='EPS', default=defaults['adam_epsilon'],
                        help='Adam\'s epsilon: weights whose gradients are much smaller than it take plain SGD '
                             'steps of rate/EPS instead of steps of about the rate (default: %(default)s)')
    parser.add_argument('--late-adam-epsilon', type=float, metavar='EPS', default=defaults['late_adam_epsilon'],
                        help='Adam\'s epsilon from halfway through the epochs after the warm-up on (0: '
                             '--adam-epsilon throughout; default: %(default)s)')
    parser.add_argument('--seed', type=int, default=0, help='random seed (default: %(default)s)')
    parser.add_argument('--augment', action=argparse.BooleanOptionalAction, default=defaults['augment'],
                        help='random flips, zoom and colour jitter of the training images, within --zoom and '
                             '--color-jitter (default: %s)' % ('on' if defaults['augment'] else 'off'))
    parser.add_argument('--zoom', type=float, nargs=2, metavar=('MIN', 'MAX'), default=defaults['zoom'],
                        help='with --augment: each training image is scaled by a random factor in [MIN, MAX], '
                             'then cropped (or, below 1, mirror-padded) back to its size (default: %(default)s)')
    parser.add_argument('--color-jitter', type=float, metavar='S', default=defaults['color_jitter'],
                        help='with --augment: random saturation and contrast (x[1-S, 1+S]), gamma (in '
                             '[e^-S, e^S]) and brightness (+-100*S levels) of each training image; 0.2 is the '
                             'classic brightness and contrast jitter (default: %(default)s)')
    parser.add_argument('--freeze-encoder', action='store_true',
                        help='train only the decoder (no gradients into VGG, fc6/fc7 included): for small GPUs')
    parser.add_argument('--xla', action='store_true', help='compile the graph with XLA (JIT)')
    parser.add_argument('--mixed-precision', action='store_true',
                        help='float16 (GPU, with loss scaling) or bfloat16 (CPU) compute, float32 weights')
    parser.add_argument('--plain-malloc', action='store_true',
                        help="leave glibc's malloc settings alone (see README, --plain-malloc)")
    parser.add_argument('--val-drive', default=config.DEFAULT_VAL_DRIVE,
                        help='CamVid: the drive held out for validation, never trained on (default: %(default)s)')
    _add_verbose_flag(parser)


def _add_verbose_flag(parser):
    parser.add_argument('--verbose', action='store_true',
                        help="also show TensorFlow's own log lines (or set %s=1)" % quiet.VERBOSE_VARIABLE)


def build_parser():
    parser = argparse.ArgumentParser(description='FCN-8 road segmentation (KITTI Road, VGG16).')
    commands = parser.add_subparsers(dest='command')
    train_parser = commands.add_parser('train', help='train on KITTI Road (the default command)')
    _add_training_flags(train_parser, TRAIN_DEFAULTS)
    train_parser.add_argument('--dataset', choices=('auto', 'kitti', 'camvid', 'cityscapes'), default='auto',
                              help='the layout of --data-dir; auto: cityscapes if it has leftImg8bit/ or gtFine/, '
                                   'camvid if it has train/, trainannot/, val/, valannot/, else KITTI (default: '
                                   '%(default)s)')
    train_parser.add_argument('--classes', choices=('road', 'all'), default='road',
                              help='road: road vs the rest; all: every class of the dataset, with per-class IoU '
                                   'and a colour palette in the overlays (default: %(default)s)')
    train_parser.add_argument('--labels', choices=('kitti', 'mask'), default='kitti',
                              help='KITTI label format: kitti colours, or mask (road 255, else 0; every pixel '
                                   'counts) (default: %(default)s)')
    train_parser.add_argument('--val-fraction', type=float, default=DEFAULT_VAL_FRACTION,
                              help='share of each KITTI category held out for validation (default: 1/6; 0: no '
                                   'validation, the last epoch is the model)')
    train_parser.add_argument('--val-cities', nargs='+', metavar='CITY', default=list(cityscapes.DEFAULT_VAL_CITIES),
                              help='Cityscapes: the train cities held out to choose the checkpoint, never trained on; '
                                   'val is kept for the report (default: %s)' % ' '.join(cityscapes.DEFAULT_VAL_CITIES))
    train_parser.add_argument('--resume', metavar='RUN_DIR', default=None,
                              help='continue that run from its last checkpoint; --epochs, --learning-rate, '
                                   '--lr-schedule, --warmup-epochs, --keep-prob, --batch-size, --clip-norm, '
                                   '--augment, --zoom, --color-jitter and --xla may change')
    train_parser.add_argument('--vgg-source', choices=config.VGG_SOURCES, default='udacity',
                              help="where to get VGG16 if <data-dir>/vgg is absent: Udacity's vgg.zip (falling back "
                                   "to keras when it fails) or Keras' ImageNet weights (default: %(default)s)")
    train_parser.add_argument('--kitti-url', default=None,
                              help='the data_road.zip link KITTI mails you: downloaded and unpacked if KITTI is absent')
    demo_parser = commands.add_parser(
        'demo', help='offline demo: generated roads, or --data-dir <CamVid folder>',
        description='The defaults below are those of the generated roads. With --data-dir <CamVid folder> the demo '
                    'trains the CamVid recipe instead: %s, from a %g-width random VGG built in data/demo/%s if '
                    'absent; flags given on the command line win.'
                    % (' '.join(as_flags(CAMVID_DEMO_DEFAULTS)), config.CAMVID_DEMO_VGG[1], config.CAMVID_DEMO_VGG[0]))
    _add_training_flags(demo_parser, DEMO_DEFAULTS)
    finish_parser = commands.add_parser('finish', help='export, test and overlay a run from its best checkpoint, '
                                                       'without training more')
    finish_parser.add_argument('run', metavar='RUN_DIR')
    _add_verbose_flag(finish_parser)
    evaluate_parser = commands.add_parser('evaluate', help='road measures of a trained model')
    evaluate_parser.add_argument('--model', required=True, help='a run folder, or its export/ folder')
    evaluate_parser.add_argument('--data-dir', default='data',
                                 help='KITTI: every labelled image of <data-dir>/data_road/training; CamVid: the '
                                      'split --split names; Cityscapes: its val split (default: data)')
    evaluate_parser.add_argument('--split', choices=('val', 'test'), default=None,
                                 help='CamVid split to measure (default: test when test/ exists, else val); '
                                      'Cityscapes: val only, its test labels are not public')
    evaluate_parser.add_argument('--json', action='store_true', help='also print one JSON object, last')
    _add_verbose_flag(evaluate_parser)
    infer_parser = commands.add_parser('infer', help='road overlays of new images and videos')
    infer_parser.add_argument('--model', required=True,
                              help='a run folder, its export/ folder, or an .onnx file made by python main.py export '
                                   '(run by onnxruntime, without TensorFlow)')
    infer_parser.add_argument('inputs', nargs='+', metavar='INPUT',
                              help='image or video (mp4, mov, avi, mkv) files, folders or glob patterns; a video '
                                   'gives <name>_overlay.mp4')
    infer_parser.add_argument('--out', default=None, help='output folder (default: a new runs/<timestamp>)')
    infer_parser.add_argument('--masks', action='store_true',
                              help='also write the road probability as 8-bit grey: <name>_road.png, or for a '
                                   'video <name>_road.mp4')
    infer_parser.add_argument('--overwrite', action='store_true', help='replace outputs that already exist')
    _add_verbose_flag(infer_parser)
    export_parser = commands.add_parser('export', help="a run's model as ONNX, kept only if onnxruntime matches "
                                                       'TensorFlow on it')
    export_parser.add_argument('--model', required=True, help='a run folder, or its export/ folder')
    export_parser.add_argument('--onnx', required=True, metavar='FILE', help='the ONNX file to write (e.g. model.onnx)')
    export_parser.add_argument('--opset', type=int, default=17, help='ONNX opset to convert to (default: %(default)s)')
    export_parser.add_argument('--overwrite', action='store_true', help='replace FILE if it exists')
    _add_verbose_flag(export_parser)
    commands.add_parser('bench', add_help=False,
                        help='speed benchmark: data pipelines, training, inference, FLOP ratios '
                             '(python main.py bench --help)')
    return parser


def as_flags(defaults):
    """{dest: value} as the command-line flags that give those values."""
    for name, value in defaults.items():
        flag = '--' + name.replace('_', '-')
        if isinstance(value, bool):
            yield flag if value else '--no-' + flag[2:]
        else:
            yield ' '.join([flag] + [str(item) for item in (value if isinstance(value, list) else [value])])


def explicit_flags(parser, argv):
    """The names of the flags given on the command line (any spelling argparse accepts: --epochs=3, --epoch 3)."""
    command_parser = parser._subparsers._group_actions[0].choices[argv[0]]
    saved = {action.dest: action.default for action in command_parser._actions}
    try:
        for action in command_parser._actions:
            action.default = argparse.SUPPRESS
        given = command_parser.parse_args(argv[1:])
    finally:
        for action in command_parser._actions:
            action.default = saved[action.dest]
    return set(vars(given))


def parse_args(argv):
    argv = list(argv)
    if not argv or argv[0].startswith('-') and argv[0] not in ('-h', '--help'):
        argv.insert(0, 'train')
    parser = build_parser()
    args = parser.parse_args(argv)
    args.given = explicit_flags(parser, argv) if args.command in ('train', 'demo') else set()
    if args.command == 'demo':
        args.camvid = 'data_dir' in args.given and datasets.is_camvid(args.data_dir)
        if args.camvid:
            use_defaults(args, CAMVID_DEMO_DEFAULTS)
        args.classes, args.labels = 'road', 'kitti'
    if args.command in ('train', 'demo'):
        validate_training_args(args)
    return args


def use_defaults(args, defaults):
    """Set each flag of `defaults` that the command line did not give."""
    for name, value in defaults.items():
        if name not in args.given:
            setattr(args, name, value)


def validate_training_args(args):
    problems = []
    if any(side <= 0 or side % OUTPUT_MULTIPLE for side in args.image_shape):
        problems.append('--image-shape %d %d: both sides must be positive multiples of %d (e.g. 160 576)'
                        % (tuple(args.image_shape) + (OUTPUT_MULTIPLE,)))
    if args.epochs < 1:
        problems.append('--epochs must be >= 1')
    if args.batch_size < 1:
        problems.append('--batch-size must be >= 1')
    if not 0 < args.keep_prob <= 1:
        problems.append('--keep-prob must be in (0, 1]')
    if not (math.isfinite(args.learning_rate) and args.learning_rate > 0):
        problems.append('--learning-rate must be a finite number > 0')
    if not all(math.isfinite(scale) for scale in args.skip_scales):
        problems.append('--skip-scales must be finite numbers')
    if not (math.isfinite(args.clip_norm) and args.clip_norm >= 0):
        problems.append('--clip-norm must be a finite number >= 0')
    if args.warmup_epochs < 0:
        problems.append('--warmup-epochs must be >= 0')
    if not (all(math.isfinite(zoom) for zoom in args.zoom) and 0 < args.zoom[0] <= args.zoom[1]):
        problems.append('--zoom MIN MAX must be finite with 0 < MIN <= MAX')
    if not 0 <= args.label_smoothing < 1:
        problems.append('--label-smoothing must be in [0, 1)')
    if not (math.isfinite(args.adam_epsilon) and args.adam_epsilon > 0):
        problems.append('--adam-epsilon must be a finite number > 0')
    if not (math.isfinite(args.late_adam_epsilon) and args.late_adam_epsilon >= 0):
        problems.append('--late-adam-epsilon must be a finite number >= 0')
    if not 0 <= args.color_jitter < 1:
        problems.append('--color-jitter must be in [0, 1)')
    if args.command == 'train':
        if args.classes == 'all' and args.dataset == 'kitti':
            problems.append('--classes all needs a CamVid or Cityscapes dataset (KITTI Road labels only road)')
        if not 0 <= args.val_fraction < 1:
            problems.append('--val-fraction must be in [0, 1)')
    if problems:
        raise errors.UserError('; '.join(problems))
    args.image_shape, args.zoom = tuple(args.image_shape), tuple(args.zoom)


# command -> (module, function). The modules are imported when their command runs: infer of an ONNX model
# must not need TensorFlow.
JOBS = {'train': ('jobs', 'train'), 'demo': ('jobs', 'demo'), 'finish': ('jobs', 'finish'),
        'evaluate': ('jobs', 'evaluate'), 'infer': ('infer_files', 'infer'),
        'export': ('onnx_export', 'export')}


def set_up_process(args):
    """Process-wide speed settings, before the first Session: see process_tuning."""
    if args.command in ('evaluate', 'infer'):
        process_tuning.cache_kernel_layouts()
        return
    process_tuning.check_weights_not_frozen()
    if args.command in ('train', 'demo') and not args.plain_malloc:
        process_tuning.tune_malloc()


def run(argv=None, own_process=False):
    """The command line. `own_process`: main.py is the program, so process-wide settings may be made.

    (Called from other code, e.g. the tests, run changes nothing beyond its job.)
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ['bench']:
        importlib.import_module('bench').main(argv[1:])
        return
    command = 'main.py %s' % (argv[0] if argv and not argv[0].startswith('-') else 'train')
    try:
        args = parse_args(argv)
        if own_process:
            set_up_process(args)
        module, function = JOBS[args.command]
        getattr(importlib.import_module(module), function)(args)
    except (errors.UserError, KeyboardInterrupt, OSError) as error:
        if own_process:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this message short
        raise SystemExit('%s: %s' % (command, one_line(error))) from None


def one_line(error):
    """What main.py says when a job stops early: the error's own message, or for an interrupt or a failed
    write, what happened and what to do."""
    if isinstance(error, KeyboardInterrupt):
        return ('interrupted. Nothing half-written was left behind; a training run continues with python main.py '
                'train --resume RUN_DIR from its last completed epoch')
    if isinstance(error, OSError):
        trouble = errors.disk_trouble(error)
        if trouble is None:
            raise error
        return str(trouble)
    return str(error)


if __name__ == '__main__':
    run(own_process=True)
