"""python main.py finish RUN, and the end of every training run: the chosen checkpoint exported, then that export's
test measures and overlays. A run folder is one model: all three come from the same export, never from the live
session.
"""
import os

from tqdm import tqdm

from roadseg.config import ModelInfo
from roadseg.data import datasets, splits
from roadseg.errors import DatasetError
from roadseg.evaluation import plots, scoring
from roadseg.serving import files, inference
from roadseg.training import curves, fit, run_folder, weight_average

# What a run's labelled "test" images are, where they are not a test split.
TEST_SET_NAMES = {'cityscapes': 'Cityscapes val images (its test labels are not public; no run trains or chooses '
                                'its checkpoint on val)'}


# --------------------------------------------------------------------------- datasets of a run


def finish(args):
    """python main.py finish RUN: the run's model from its best checkpoint, without training more.

    --data-dir and --vgg-dir point the run at its moved data and VGG16. Everything finish reads is checked before
    anything is exported: a run whose test images are gone is refused, not exported without them.
    """
    run = run_folder.RunFolder.existing(args.run)
    with run.owned():
        config, lines = run_folder.relocated(run, run.read_config(), args.vgg_dir, args.data_dir)
        run_folder.check_inputs(run, config, 'finish', run_folder.FILES_TO_FINISH)
        if lines:
            run.write_config(config)
            print('\n'.join(lines))
        results = finish_run(run, config)
    print('finish: %s, %s' % (describe_test_results(results, config), results.written))


class Finished(dict):
    """What finish_run made: the test measures ({} without labelled test images) and, in `written`, a phrase
    saying what the run's folder holds of that model ('model and 8 overlays in RUN')."""

    def __init__(self, results, written):
        super().__init__(results)
        self.written = written


def describe_test_results(results, config):
    if not results:
        return 'no labelled test images'
    classes = ', mean class IoU %.3f' % results['miou'] if 'miou' in results else ''
    note = splits.overlap_note(splits.overlap_with_test(config.dataset, config.train, config.val, config.test))
    return 'test road IoU %.3f (MaxF %.3f)%s on %d %s%s%s' % (
        results['iou'], results['maxf'], classes, len(config.test), TEST_SET_NAMES.get(config.dataset, 'test images'),
        by_group(results, config), ' (%s)' % note if note else '')


def by_group(results, config):
    """'; by drive: 0001TP 0.635 on 62, Seq05VD 0.757 on 171' (CamVid drives, KITTI categories) when the test
    images are of more than one; '' otherwise."""
    groups = results.get('groups', {})
    if len(groups) < 2:
        return ''
    return '; by %s: %s' % ('drive' if config.dataset == 'camvid' else 'category', ', '.join(
        '%s %.3f on %d' % (name, group['iou'], group['images']) for name, group in sorted(groups.items())))


def model_info(config):
    fmt = datasets.label_format(config.dataset, config.classes)
    return ModelInfo(config.dataset, config.classes, tuple(fmt.class_names), fmt.road_class,
                     tuple(config.image_shape), config.flip_average, tuple(config.scales))


def finish_run(run, config):
    """Export the chosen checkpoint, then its test measures and its overlays: one model for all three.

    Returns them as Finished. What an older model of the run left (its test measures, the overlays of images
    that cannot be read now) is removed once the new export is in place: a run folder is one model.
    """
    chosen = fit.chosen_checkpoint(run, config)
    if chosen is None:
        raise DatasetError('%s has no checkpoint yet: train at least one epoch (python main.py train --resume %s)'
                           % (run.path, run.path))
    name, prefix, state = chosen
    averaged = state.get(weight_average.AVERAGED_EPOCHS, 0)
    export_dir = inference.export_inference_model(prefix, os.path.join(run.path, inference.EXPORT_FOLDER),
                                                  config.vgg_path, model_info(config), tuple(config.skip_scales),
                                                  averaged=bool(averaged))
    print('Exported the %s checkpoint (epoch %d%s) to %s' % (
        name, state['epoch'], '; the mean of the weights of epochs %d-%d' % (state['epoch'] - averaged + 1,
                                                                             state['epoch']) if averaged else '',
        export_dir))
    plots_dir = os.path.join(run.path, run_folder.PLOTS_FOLDER)
    for stale in [os.path.join(run.path, run_folder.TEST_METRICS_FILE)] + [
            os.path.join(plots_dir, name) for name in plots.evaluation_plot_files()]:
        _remove(stale)
    exported = inference.ExportedModel(export_dir)
    try:
        results, pictures = _test_measures(exported, config, plots_dir)
        if results:
            overlap = splits.overlap_with_test(config.dataset, config.train, config.val, config.test)
            run.write_test_metrics(dict(results, checkpoint=name, epoch=state['epoch'],
                                        **({'test_overlap': overlap} if overlap else {})))
        written, skipped = _overlays(exported, config.test_images, run.path)
    finally:
        exported.close()
    print('Saved %d overlays of the %s images to %s%s' % (written, overlay_source(config), run.path,
                                                          '; %d unreadable image(s) skipped, no overlay of them'
                                                          % skipped if skipped else ''))
    drawn = curves.write_training_curves(run, config)
    pictures = ([os.path.basename(drawn[0])] if drawn else []) + [os.path.basename(path) for path in pictures]
    if pictures:
        print('Drew %s in %s' % (', '.join(pictures), plots_dir))
    return Finished(results, 'model and %d overlays in %s%s' % (
        written, run.path, ' (%d unreadable test image(s) have none)' % skipped if skipped else ''))


def _remove(path):
    if os.path.isfile(path):
        os.remove(path)


def overlay_source(config):
    """Which images the run overlays: 'test'; or, when it has none, 'validation' (or 'training', for a CamVid run
    with no held-out drive)."""
    for role, pairs in (('validation', config.val), ('training', config.train)):
        if config.test_images and set(config.test_images) <= {image for image, _ in pairs}:
            return role
    return 'test'


def _test_measures(exported, config, out_dir):
    """(the measures on the labelled test images, the paths of their pictures in `out_dir`); ({}, []) without."""
    if not config.test:
        return {}, []
    fmt = datasets.label_format(config.dataset, config.classes)
    metrics, class_iou = scoring.evaluate(exported, config.test, fmt.to_onehot, description='testing')
    groups = {name: result for name, result in scoring.measured(metrics).items() if name != 'all' and result}
    os.makedirs(out_dir, exist_ok=True)
    pictures = plots.write_evaluation_plots(out_dir, exported, config.test, fmt.to_onehot, metrics,
                                            '%d test images' % len(config.test))
    return dict(metrics.result(), groups=groups, **({'miou': class_iou.mean()} if class_iou else {})), pictures


def _overlays(exported, paths, out_dir):
    """The run's test overlays, named like the images (the classic exercise's runs/<timestamp>/<name>.png)."""
    skipped = []
    plan = {path: [os.path.join(out_dir, os.path.basename(path))] for path in paths}
    written = files.write_image_predictions(exported, plan,
                                                  on_unreadable=lambda path, error: skipped.append(path))
    for path in skipped:
        tqdm.write('skipped unreadable test image %s' % path)
        for output in plan[path]:
            _remove(output)  # an overlay of an older model of the run
    return written, len(skipped)
