"""The pictures: evaluate --plots (the PR curves with their MaxF points, the worst images), and a run's training
curves, drawn at its end and again by python main.py plot."""
import csv
import os
import shutil

import imageio.v3 as iio
import pytest

from roadseg.data import datasets
from roadseg.evaluation import plots, scoring
from roadseg.serving import inference
from roadseg.training import curves, run_folder
from tests.helpers import run_main


def test_evaluate_plots_writes_pictures_that_open_and_refuses_to_replace_them_unasked(small_trained_run,
                                                                                      small_dataset, tmp_path):
    out = str(tmp_path / 'plots')
    argv = ['evaluate', '--model', small_trained_run, '--data-dir', os.path.dirname(small_dataset), '--plots', out]
    stdout, stop = run_main(argv)
    assert stop is None, stop
    written = [os.path.join(out, name) for name in (plots.PR_CURVE_FILE, plots.WORST_IMAGES_FILE)]
    assert stdout.splitlines()[-1] == 'evaluate: wrote %s' % ', '.join(written)
    assert sorted(os.listdir(out)) == sorted(os.path.basename(path) for path in written)
    for path in written:
        picture = iio.imread(path)
        assert picture.ndim == 3 and picture.shape[0] > 300 and picture.shape[1] > 500 and picture.std() > 10, path
    _, stop = run_main(argv)
    assert ('2 output file(s) already exist in %s (e.g. pr_curve.png); pass --overwrite to replace them, or choose '
            'another --plots' % out) in stop, stop
    assert run_main(argv + ['--overwrite'])[1] is None
    _, stop = run_main(argv[:-1] + [os.path.join(small_trained_run, 'mine')])
    assert 'is inside the run folder' in stop, stop


@pytest.fixture(scope='module')
def scored(small_trained_run, small_dataset):
    """(the exported model, its pairs, their RoadMetrics, evaluate's printed table) on small_dataset."""
    stdout, _ = run_main(['evaluate', '--model', small_trained_run, '--data-dir', os.path.dirname(small_dataset)])
    exported = inference.ExportedModel(small_trained_run)
    pairs = datasets.kitti_road_pairs(os.path.join(small_dataset, 'training'))
    metrics, _ = scoring.evaluate(exported, pairs)
    yield exported, pairs, metrics, stdout
    exported.close()


def test_each_pr_curve_marks_the_point_of_the_tables_maxf(scored):
    _, _, metrics, table = scored
    figure = plots.pr_figure(metrics, 'test')
    marked = {line.get_gid()[len(plots.MAXF_MARKER):]: line for line in figure.axes[0].get_lines()
              if (line.get_gid() or '').startswith(plots.MAXF_MARKER)}
    assert sorted(marked) == ['all', 'um', 'umm', 'uu']
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1:]}
    for name, marker in marked.items():
        (recall,), (precision,) = marker.get_xdata(), marker.get_ydata()
        f_measure = 2 * precision * recall / (precision + recall)
        result = metrics.result() if name == 'all' else metrics.category_result(name)
        assert f_measure == pytest.approx(result['maxf'], abs=1e-12)
        assert rows[name][3] == '%.2f' % (100 * f_measure), 'the MaxF column of evaluate\'s table'


def test_the_worst_images_sheet_names_the_images_of_lowest_iou_with_their_iou(scored):
    exported, pairs, metrics, _ = scored
    worst = scoring.worst_images(exported, pairs, datasets.kitti_label_to_onehot, metrics.image_iou, 3)
    titles = [axes.get_title() for axes in plots.worst_images_figure(worst, 'test').axes]
    lowest = sorted(metrics.image_iou.items(), key=lambda item: (item[1], item[0]))[:3]
    assert titles == ['%s  IoU %.3f' % (os.path.basename(path), iou) for path, iou in lowest]
    assert len(set(metrics.image_iou.values())) > 3, 'the images differ, so the order is the IoU\'s'


def test_every_run_ends_with_its_training_curves_and_plot_draws_them_again(small_trained_run, tmp_path):
    drawn = os.path.join(small_trained_run, run_folder.PLOTS_FOLDER, curves.TRAINING_CURVES_FILE)
    assert iio.imread(drawn).ndim == 3, 'train drew the curves at the run\'s end'
    run = str(tmp_path / 'run')  # a copy of what plot reads: the config, metrics.csv, the checkpoints' states
    for name in (run_folder.RUN_CONFIG_FILE, run_folder.METRICS_FILE):
        os.makedirs(run, exist_ok=True)
        shutil.copy(os.path.join(small_trained_run, name), run)
    for checkpoint in run_folder.CHECKPOINT_NAMES:
        folder = os.path.join(run, 'checkpoints', checkpoint)
        os.makedirs(folder)
        for name in (run_folder.STATE_FILE, run_folder.CHECKPOINT_PREFIX + '.index'):
            shutil.copy(os.path.join(small_trained_run, 'checkpoints', checkpoint, name), folder)
    stdout, stop = run_main(['plot', run])
    assert stop is None, stop
    chosen = run_folder.RunFolder(run).checkpoint('best')[1]['epoch']
    path = os.path.join(run, run_folder.PLOTS_FOLDER, curves.TRAINING_CURVES_FILE)
    assert stdout.strip() == ('plot: train loss and validation road MaxF of 2 epochs, epoch %d chosen, in %s'
                              % (chosen, path))
    assert iio.imread(path).shape == iio.imread(drawn).shape
    with open(os.path.join(run, run_folder.METRICS_FILE)) as f:
        rows = list(csv.DictReader(f))
    figure = curves.training_figure(rows, chosen, 'maxf', 'road MaxF', 'test')
    (marker,) = [line for axes in figure.axes for line in axes.get_lines() if line.get_gid() == curves.CHOSEN_MARKER]
    best = max(rows, key=lambda row: float(row['val_maxf']))
    assert (marker.get_xdata()[0], marker.get_ydata()[0]) == (int(best['epoch']), float(best['val_maxf']))
    os.remove(os.path.join(run, run_folder.METRICS_FILE))
    _, stop = run_main(['plot', run])
    assert stop == 'main.py plot: %s has no epoch in its metrics.csv yet: plot it once its first epoch is done' % run
