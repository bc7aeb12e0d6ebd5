"""python main.py train and demo: a new run (its data split, its VGG, its folder) trained and finished, or a run
resumed from its last checkpoint."""
import os

from roadseg import atomic, process, vgg_builder
from roadseg.commands.finish import by_group, describe_test_results, finish_run
from roadseg.config import CAMVID_DEMO_VGG, DATASET_NAMES, GENERATED_DEMO_VGG, RUN_CONFIG_FILE, RunConfig
from roadseg.data import downloads, splits
from roadseg.errors import RunFolderError, TrainingDiverged
from roadseg.process import graph_mode_tf
from roadseg.training import fit, run_folder

tf = graph_mode_tf()

# Settings a run's model or data depend on: --resume refuses to change them. (--data-dir and --vgg-dir may point a
# resumed run at its moved data and VGG16: run_folder.relocated.)
FIXED_ON_RESUME = ('image_shape', 'skip_scales', 'seed', 'freeze_encoder', 'mixed_precision', 'average_weights',
                   'dataset', 'classes', 'val_fraction', 'val_drive', 'val_cities', 'labels', 'vgg_source',
                   'kitti_url')


def run_config(args, data, vgg_path):
    """The RunConfig of a new run: the flags, and the RunData `data` with every path made absolute."""
    return RunConfig(
        dataset=data.dataset, classes=args.classes, data_root=os.path.abspath(data.root),
        vgg_path=os.path.abspath(vgg_path), image_shape=tuple(args.image_shape), batch_size=args.batch_size,
        learning_rate=args.learning_rate, keep_prob=args.keep_prob, skip_scales=tuple(args.skip_scales),
        seed=args.seed, epochs=args.epochs, augment=args.augment, freeze_encoder=args.freeze_encoder,
        xla=args.xla, mixed_precision=args.mixed_precision, clip_norm=args.clip_norm, zoom=tuple(args.zoom),
        color_jitter=args.color_jitter, cutmix=args.cutmix, lr_schedule=args.lr_schedule,
        warmup_epochs=args.warmup_epochs, label_smoothing=args.label_smoothing,
        lovasz_weight=args.lovasz_weight, adam_epsilon=args.adam_epsilon,
        late_adam_epsilon=args.late_adam_epsilon, flip_average=args.flip_average, scales=tuple(args.scales),
        average_weights=args.average_weights,
        train=[tuple(map(os.path.abspath, pair)) for pair in data.train],
        val=[tuple(map(os.path.abspath, pair)) for pair in data.val],
        test=[tuple(map(os.path.abspath, pair)) for pair in data.test],
        test_images=[os.path.abspath(path) for path in data.overlays])


def train_new_run(args, config, runs_dir=None, finish=True):
    """Check the data, make the run's folder (in `runs_dir`, else --runs-dir), train and (unless not `finish`)
    finish; returns (run, its Finished results or None). A run that fails before its first checkpoint leaves no
    folder behind."""
    for warning in fit.check_run_data(config):
        print(warning)
    announce_device(config)
    run = run_folder.RunFolder(atomic.new_timestamped_folder(runs_dir or args.runs_dir))
    try:
        with run.owned():
            run.write_config(config)
            if not finish:
                fit.fit(run, config)
                return run, None
            return run, train_and_finish(run, config)
    except BaseException:
        run.remove_if_nothing_trained()
        raise


def announce_device(config):
    """Say which device trains. Before TensorFlow first looks at its devices: XLA's CPU switch is read then."""
    if config.xla:
        process.let_xla_cluster_on_cpu()
    print(process.describe_device(tf))


def train_and_finish(run, config):
    """Train, then export/test/overlay the chosen checkpoint; a diverged run is finished from its best too."""
    try:
        fit.fit(run, config)
    except TrainingDiverged as error:
        if fit.chosen_checkpoint(run, config) is None:
            raise
        finish_run(run, config)
        raise TrainingDiverged('%s. Nothing trained is lost: the run was finished from its best checkpoint '
                               '(export, overlays) in %s' % (error, run.path)) from error
    return finish_run(run, config)


def train(args):
    """The main job: KITTI Road (or CamVid) + pretrained VGG16, or --resume RUN_DIR."""
    if args.resume:
        run, config, results = resume(args)
    else:
        data = splits.training_data(args)
        vgg_path = args.vgg_dir or vgg_builder.ensure_vgg(args.data_dir, args.vgg_source)
        config = run_config(args, data, vgg_path)
        run, results = train_new_run(args, config)
    print('train: done, %s, %s' % (describe_test_results(results, config), results.written))


def resume(args):
    """Continue the run of --resume, with the flags given now (those a run may change) applied, and --data-dir and
    --vgg-dir pointing it at moved inputs. Everything is checked before run.json is written, once: a resume that
    stops before training leaves run.json as it was."""
    run = run_folder.RunFolder.existing(args.resume)
    dataset = run.read_config().dataset
    splits.check_dataset_flags('train', dataset, args.given, 'the run %s trains on %s'
                               % (run.path, DATASET_NAMES.get(dataset, dataset)))
    refused = sorted(args.given & set(FIXED_ON_RESUME))
    if refused:
        raise RunFolderError('%s cannot change on --resume (the run\'s model and data depend on it); start a new '
                             'run instead' % ', '.join('--' + name.replace('_', '-') for name in refused))
    with run.owned():
        config, lines = resumed_config(run, args)
        run_folder.check_inputs(run, config, 'train')
        if lines:
            run.write_config(config)
            print('\n'.join(lines))
        announce_device(config)
        return run, config, train_and_finish(run, config)


def resumed_config(run, args):
    """(the run's config with the flags given now, lines saying what changed); nothing written."""
    config = run.read_config()
    last = run.checkpoint('last')
    done = last[1]['epoch'] if last else 0
    if 'epochs' in args.given and args.epochs < done:
        raise RunFolderError('%s has already trained %d epochs; --epochs must be at least that (to finish it '
                             'without training: python main.py finish %s)' % (run.path, done, run.path))
    changed = {name: getattr(args, name) for name in RunConfig.RESUMABLE if name in args.given}
    for name, value in changed.items():
        setattr(config, name, value)
    config, lines = run_folder.relocated(run, config, args.vgg_dir if 'vgg_dir' in args.given else None,
                                         args.data_dir if 'data_dir' in args.given else None)
    if changed:
        lines.insert(0, 'Resuming with %s (recorded in %s)' % (', '.join('%s=%s' % item for item in changed.items()),
                                                              RUN_CONFIG_FILE))
    return config, lines


def demo_vgg(args):
    """The demo's VGG16: --vgg-dir, or the random one of its dataset, built if absent."""
    demo_dir = os.path.join(args.data_dir, 'demo') if not args.camvid else os.path.join('data', 'demo')
    encoder = CAMVID_DEMO_VGG if args.camvid else GENERATED_DEMO_VGG
    vgg_path = args.vgg_dir or os.path.join(demo_dir, encoder.folder)
    if args.vgg_dir is None and not downloads.vgg_is_complete(vgg_path):
        vgg_builder.write_random_vgg16(vgg_path, width=encoder.width, seed=args.seed, norm_groups=encoder.norm_groups)
    return vgg_path


def demo(args):
    """Offline end to end: a small random VGG16-shaped encoder, trained, chosen on validation, scored on test."""
    vgg_path = demo_vgg(args)
    data = (splits.camvid_data(args.data_dir, args.val_drive) if args.camvid
            else splits.generated_roads_data(os.path.join(args.data_dir, 'demo'), args.seed))
    config = run_config(args, data, vgg_path)
    run, results = train_new_run(args, config)
    if results:
        note = splits.overlap_note(splits.overlap_with_test(config.dataset, config.train, config.val, config.test))
        print('demo: test road IoU %.2f on %d test images%s%s, %s' % (
            results['iou'], len(config.test), by_group(results, config), ' (%s)' % note if note else '',
            results.written))
    elif config.val:
        validation = run.checkpoint('best')[1]['validation']
        print('demo: no test/ split in %s; validation road IoU %.2f on %d images of drive %s (the checkpoint was '
              'chosen on them), %s' % (args.data_dir, validation['iou'], len(config.val), args.val_drive,
                                       results.written))
    else:
        print('demo: no test/ split in %s and no drive held out (--val-drive %s): nothing measured the model; the '
              'held-out figures of this recipe come from --folds, %s' % (args.data_dir, args.val_drive,
                                                                        results.written))
