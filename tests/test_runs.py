"""Training runs: what a run folder holds, one model per run, exact resumes, and nothing lost or left behind."""
import dataclasses
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import imageio.v3 as iio
import numpy as np
import pytest

from roadseg import atomic, config, model
from roadseg.data import batches, datasets, images, roadgen, splits
from roadseg.process import graph_mode_tf
from roadseg.evaluation import scoring
from roadseg.serving import inference
from roadseg.training import fit, loop, run_folder, schedules, weight_average
from tests.helpers import CHILD_TIMEOUT, ROOT, child_environment, only_run, run_main, write_png

tf = graph_mode_tf()


def checkpoint_values(prefix):
    """{variable name: value} of a checkpoint: what a run restores, Adam's slots and counters included."""
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(prefix)}


def same_values(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[name], b[name]) for name in a)


def last_values(run_path):
    return checkpoint_values(run_folder.RunFolder(run_path).checkpoint('last')[0])


def metrics_rows(run_path):
    return [(int(row['epoch']), row['train_loss']) for row in run_folder.RunFolder(run_path).read_metrics()]


@pytest.fixture(scope='module')
def uninterrupted_run(tmp_path_factory, quick_train_args):
    """The reference for exact resumes: the quick run trained for 4 epochs in one go."""
    runs = str(tmp_path_factory.mktemp('reference'))
    _, stop = run_main(quick_train_args(runs, 4))
    assert stop is None, stop
    return only_run(runs)


# --------------------------------------------------------------------------- the demo, end to end

def _road(label_path):
    return datasets.kitti_label_to_onehot(images.read_rgb(label_path))[..., 1]


def _iou(predictions, onehots):
    """Road IoU of road masks against one-hot labels, don't-care pixels left out (counted here, by hand)."""
    tp = fp = fn = 0
    for predicted, onehot in zip(predictions, onehots):
        road, care = onehot[..., 1], onehot.any(axis=-1)
        tp, fp, fn = tp + (predicted & road & care).sum(), fp + (predicted & ~road & care).sum(), \
            fn + (~predicted & road & care).sum()
    return tp / (tp + fp + fn)


def test_demo_splits_three_ways_and_reports_test_iou_above_trivial_baselines(new_folder):
    # The demo generates its 520 scenes when data/demo has none; a smaller set placed there is used as it is.
    data_dir, runs_dir = new_folder('demo-data'), new_folder('demo-runs')
    roadgen.generate_dataset(os.path.join(data_dir, 'demo'), n_train=156, n_test=4, image_shape=(94, 310))
    out, stop = run_main(['demo', '--data-dir', data_dir, '--runs-dir', runs_dir, '--epochs', '8',
                          '--image-shape', '64', '224', '--learning-rate', '1e-3'])
    assert stop is None, stop
    run = run_folder.RunFolder(only_run(runs_dir))
    config = run.read_config()
    train, val, test = ({tuple(pair) for pair in split} for split in (config.train, config.val, config.test))
    assert len(test) == len(val) == 12 and len(train) == 132 and not (train & val or train & test or val & test)
    results = json.load(open(os.path.join(run.path, run_folder.TEST_METRICS_FILE)))
    assert 'demo: test road IoU %.2f on 12 test images' % results['iou'] in out, out
    # Baselines that look at no image: "everything is road", and the road where most training labels have it
    # (generated roads sit low and central, so a network that learnt only that prior would pass the first).
    prior = np.mean([_road(label) for _, label in config.train], axis=0) > 0.5
    test_labels = [datasets.kitti_label_to_onehot(images.read_rgb(label)) for _, label in config.test]
    all_road = _iou([np.ones_like(prior)] * len(test_labels), test_labels)
    positional = _iou([prior] * len(test_labels), test_labels)
    assert results['iou'] > max(all_road, positional) + 0.1, (results['iou'], all_road, positional)
    overlays = sorted(glob.glob(os.path.join(run.path, '*.png')))
    assert [os.path.basename(p) for p in overlays] == [os.path.basename(p) for p in config.test_images]
    assert glob.glob(os.path.join(run.path, 'tensorboard', 'events.out.tfevents.*'))


# --------------------------------------------------------------------------- one model per run folder

def test_the_run_is_its_best_checkpoint_export_overlays_and_test_measures_alike(quick_train_args, new_folder):
    """A run whose best checkpoint (epoch 1) differs from its last (epoch 2): `finish` makes everything of best."""
    runs = new_folder('best-not-last')
    _, stop = run_main(quick_train_args(runs, 1))
    run = run_folder.RunFolder(only_run(runs))
    kept = os.path.join(new_folder('epoch1'), 'best')
    shutil.copytree(run.checkpoint_dir('last'), kept)
    _, stop = run_main(['train', '--resume', run.path, '--epochs', '2'])
    assert stop is None, stop
    shutil.rmtree(run.checkpoint_dir('best'))
    shutil.copytree(kept, run.checkpoint_dir('best'))
    best, last = checkpoint_values(run.checkpoint('best')[0]), checkpoint_values(run.checkpoint('last')[0])
    assert not same_values(best, last)
    out, stop = run_main(['finish', run.path])
    assert stop is None and 'finish: ' in out, (out, stop)
    # The export holds the best checkpoint's weights, bit for bit.
    exported = checkpoint_values(os.path.join(run.path, 'export', 'variables', 'variables'))
    assert all(np.array_equal(exported[name], best[name]) for name in exported if name in best)
    assert not all(np.array_equal(exported[name], last[name]) for name in exported if name in last)
    # The overlays are the export's: python main.py infer on the same images gives the same pictures.
    config = run.read_config()
    infer_out = os.path.join(new_folder('infer-same'), 'out')
    _, stop = run_main(['infer', '--model', run.path, *config.test_images, '--out', infer_out])
    assert stop is None, stop
    for path in config.test_images:
        stem = os.path.splitext(os.path.basename(path))[0]
        mine = iio.imread(os.path.join(run.path, os.path.basename(path))).astype(int)
        assert np.abs(mine - iio.imread(os.path.join(infer_out, stem + '_overlay.png')).astype(int)).max() <= 1


# --------------------------------------------------------------------------- resuming

def test_resume_restores_weights_and_adam_state_exactly_and_honours_epochs_in_any_spelling(
        quick_train_args, uninterrupted_run, tmp_path):
    reference = uninterrupted_run
    runs = str(tmp_path)
    run_main(quick_train_args(runs, 1))
    run = only_run(runs)
    out, stop = run_main(['train', '--resume', run, '--epochs=3'])
    assert stop is None and 'Resuming %s after epoch 1 of 3' % run in out, (out, stop)
    out, stop = run_main(['train', '--resume', run, '--epoch', '4'])  # argparse's abbreviation of --epochs
    assert stop is None and 'after epoch 3 of 4' in out, (out, stop)
    assert run_folder.RunFolder(run).read_config().epochs == 4
    # Resumed twice, the run is the uninterrupted one: every weight and Adam slot, every epoch's loss.
    assert same_values(last_values(run), last_values(reference))
    assert metrics_rows(run) == metrics_rows(reference)
    _, stop = run_main(['train', '--resume', run, '--epochs', '2'])
    assert 'already trained 4 epochs' in stop and 'main.py finish' in stop, stop
    assert run_folder.RunFolder(run).read_config().epochs == 4, 'a refused resume changes nothing'


def test_resume_applies_and_records_changed_settings_and_refuses_fixed_ones(
        quick_train_args, uninterrupted_run, tmp_path):
    runs = str(tmp_path)
    run_main(quick_train_args(runs, 1))
    run = only_run(runs)
    _, stop = run_main(['train', '--resume', run, '--image-shape', '32', '96'])
    assert '--image-shape cannot change on --resume' in stop, stop
    out, stop = run_main(['train', '--resume', run, '--epochs', '2', '--learning-rate', '1e-9', '--batch-size', '2'])
    assert stop is None and 'learning_rate=1e-09' in out, (out, stop)
    config = run_folder.RunFolder(run).read_config()
    assert (config.learning_rate, config.batch_size, config.epochs) == (1e-9, 2, 2)
    # At a learning rate of 1e-9 the second epoch barely moves the weights: the rate reached training.
    reference = uninterrupted_run
    first_epoch_loss = metrics_rows(reference)[0][1]
    assert metrics_rows(run)[0][1] == first_epoch_loss
    assert abs(float(metrics_rows(run)[1][1]) - float(metrics_rows(reference)[1][1])) > 1e-4


def test_a_second_process_cannot_resume_a_run_that_is_training(small_trained_run):
    run = run_folder.RunFolder(small_trained_run)
    with run.owned():
        _, stop = run_main(['train', '--resume', run.path, '--epochs', '3'])
        assert 'is being trained by another process' in stop, stop
        _, stop = run_main(['finish', run.path])
        assert 'is being trained by another process' in stop, stop
    assert run.checkpoint('last')[1]['epoch'] == 2


def test_a_read_never_changes_a_run_folder(tmp_path):
    """Between save_checkpoint's two renames only the retired copy exists: readers use it where it is."""
    run = run_folder.RunFolder(str(tmp_path))
    with tf.Graph().as_default(), tf.Session() as sess:
        weight = tf.Variable(7.0, name='weight')
        sess.run(weight.initializer)
        run.save_checkpoint(sess, tf.train.Saver([weight]), 'last', {'epoch': 2})
    os.rename(run.checkpoint_dir('last'), atomic.retired_path(run.checkpoint_dir('last')))
    before = sorted(os.listdir(os.path.join(run.path, 'checkpoints')))
    prefix, state = run.checkpoint('last')
    assert state == {'epoch': 2} and checkpoint_values(prefix) == {'weight': 7.0}
    assert sorted(os.listdir(os.path.join(run.path, 'checkpoints'))) == before


def test_damaged_run_json_or_checkpoint_state_end_in_one_line(quick_train_args, new_folder):
    runs = new_folder('damaged')
    run_main(quick_train_args(runs, 1))
    run = only_run(runs)
    state = os.path.join(run, 'checkpoints', 'last', run_folder.STATE_FILE)
    with open(state, 'w') as f:
        f.write('{"epoch": ')
    _, stop = run_main(['train', '--resume', run, '--epochs', '2'])
    assert 'state.json is damaged' in stop and '\n' not in stop, stop
    with open(os.path.join(run, config.RUN_CONFIG_FILE), 'w') as f:
        f.write('{"dataset": "kitti", "cla')
    _, stop = run_main(['train', '--resume', run])
    assert 'run.json is damaged' in stop and '\n' not in stop, stop
    _, stop = run_main(['train', '--resume', new_folder('not-a-run')])
    assert 'is not a run folder' in stop, stop


# --------------------------------------------------------------------------- kills, Ctrl-C, full disks

def _start_training(argv):
    """main.py in a child that takes Ctrl-C as a terminal's would, even when this suite runs in the background
    (where the shell has the children ignore SIGINT)."""
    return subprocess.Popen([sys.executable, os.path.join(ROOT, 'main.py')] + argv,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_environment(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for_checkpoint(runs, process, epoch):
    """Wait (at most CHILD_TIMEOUT) until the child's run has checkpoints/last of `epoch` or later."""
    deadline = time.monotonic() + CHILD_TIMEOUT
    while time.monotonic() < deadline:
        found = glob.glob(os.path.join(runs, '2*'))
        state = run_folder.RunFolder(found[0]).checkpoint('last') if found else None
        if state and state[1]['epoch'] >= epoch:
            return found[0]
        assert process.poll() is None, 'training ended early:\n' + process.communicate()[1][-3000:]
        time.sleep(0.02)
    process.kill()
    raise AssertionError('no checkpoint of epoch %d within %ds' % (epoch, CHILD_TIMEOUT))


def _stop(process, sig):
    process.send_signal(sig)
    try:
        return process.communicate(timeout=CHILD_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()


def _resume_to(run, epochs):
    _, stop = run_main(['train', '--resume', run, '--epochs', str(epochs)])
    assert stop is None, stop


def _weights_of_run(argv):
    """The trained weights (Adam's slots and counters left out) of a fresh quick run: main.py train argv."""
    _, stop = run_main(argv)
    assert stop is None, stop
    values = last_values(only_run(argv[argv.index('--runs-dir') + 1]))
    return {name: value for name, value in values.items() if name.endswith(('kernel', 'bias'))}


def test_a_huge_late_adam_epsilon_holds_the_weights_from_the_late_phase_on(quick_train_args, new_folder):
    # Two epochs, no warm-up: the late phase is epoch 2. At epsilon 1e6 its steps are about a millionth of
    # Adam's usual, so the weights stay those of the one-epoch run (which is the same run up to there).
    one_epoch = _weights_of_run(quick_train_args(new_folder('late-epsilon-1'), 1))
    held = _weights_of_run(quick_train_args(new_folder('late-epsilon-2'), 2, '--late-adam-epsilon', '1e6'))
    trained_on = _weights_of_run(quick_train_args(new_folder('late-epsilon-off'), 2))
    assert one_epoch and held.keys() == one_epoch.keys() == trained_on.keys()
    assert max(np.abs(held[name] - one_epoch[name]).max() for name in one_epoch) < 1e-6
    assert max(np.abs(trained_on[name] - one_epoch[name]).max() for name in one_epoch) > 1e-4


def test_an_averaged_run_exports_and_validates_the_mean_of_its_epochs_weights(quick_train_args, new_folder):
    # No warm-up: epochs 1 and 2 are averaged. Averaging changes no training step, so the one-epoch run's
    # weights are the averaged run's after its first epoch.
    one_epoch = _weights_of_run(quick_train_args(new_folder('average-1'), 1))
    runs = new_folder('average-2')
    out, stop = run_main(quick_train_args(runs, 2, '--average-weights'))
    assert stop is None, stop
    assert 'the mean of the weights at the end of epochs 1-2' in out and 'the mean of the weights of epochs 1-2' in out
    run = run_folder.RunFolder(only_run(runs))
    prefix, state = run.checkpoint('last')
    values = checkpoint_values(prefix)
    assert state[weight_average.AVERAGED_EPOCHS] == 2 and values[config.WEIGHT_AVERAGE_SCOPE + '/count'] == 2
    means = {name: (one_epoch[name] + values[name]) / 2 for name in one_epoch}
    assert max(np.abs(values[name] - one_epoch[name]).max() for name in one_epoch) > 1e-4, 'epoch 2 trained'
    assert max(np.abs(values[config.WEIGHT_AVERAGE_SCOPE + '/' + name] - means[name]).max() for name in means) < 1e-5
    with tf.Graph().as_default(), tf.Session() as sess:
        tf.saved_model.loader.load(sess, [inference.SERVE_TAG], os.path.join(run.path, inference.EXPORT_FOLDER))
        exported = {v.op.name: value for v, value in zip(tf.global_variables(), sess.run(tf.global_variables()))}
    assert exported.keys() >= means.keys()
    assert max(np.abs(exported[name] - means[name]).max() for name in means) < 1e-5
    # Validation saw the mean too: the last epoch's validation is the export's score on the same images.
    config_ = run.read_config()
    model_ = inference.ExportedModel(os.path.join(run.path, inference.EXPORT_FOLDER))
    try:
        metrics, _ = scoring.evaluate(model_, config_.val, datasets.kitti_label_to_onehot)
    finally:
        model_.close()
    assert abs(metrics.result()['iou'] - float(run.read_metrics()[-1]['val_iou'])) < 1e-4


def test_a_run_killed_at_any_moment_resumes_to_exactly_the_uninterrupted_run(
        quick_train_args, uninterrupted_run, tmp_path):
    runs = str(tmp_path)
    process = _start_training(quick_train_args(runs, 40))
    run = _wait_for_checkpoint(runs, process, 1)
    _stop(process, signal.SIGKILL)  # wherever it lands: mid-step, mid-validation, mid-save
    _resume_to(run, 4)
    assert same_values(last_values(run), last_values(uninterrupted_run))
    assert metrics_rows(run) == metrics_rows(uninterrupted_run), 'every epoch has its row'
    leftovers = [name for name in os.listdir(os.path.join(run, 'checkpoints')) if name.startswith('.')]
    assert not leftovers and not glob.glob(os.path.join(run, atomic.STAGING_PREFIX + '*')), leftovers


def test_ctrl_c_says_where_the_run_stands_in_one_line_and_its_resume_is_exact(
        quick_train_args, uninterrupted_run, tmp_path):
    runs = str(tmp_path)
    process = _start_training(quick_train_args(runs, 40))
    run = _wait_for_checkpoint(runs, process, 1)
    _, stderr = _stop(process, signal.SIGINT)
    assert process.returncode == 1 and 'Traceback' not in stderr, stderr[-3000:]
    last_line = stderr.strip().splitlines()[-1]
    assert 'interrupted' in last_line and '--resume %s' % run in last_line, last_line
    _resume_to(run, 4)
    assert same_values(last_values(run), last_values(uninterrupted_run))


def test_sigterm_and_sighup_end_a_run_as_ctrl_c_does(quick_train_args, tmp_path):
    """What a scheduler, `timeout` or a closed terminal sends: one line, no traceback, the last completed epoch kept."""
    for number, sig in enumerate((signal.SIGTERM, signal.SIGHUP)):
        runs = str(tmp_path / str(number))
        process = _start_training(quick_train_args(runs, 40))
        run = _wait_for_checkpoint(runs, process, 1)
        _, stderr = _stop(process, sig)
        assert process.returncode == 1 and 'Traceback' not in stderr, stderr[-3000:]
        last_line = stderr.strip().splitlines()[-1]
        assert 'interrupted' in last_line and '--resume %s' % run in last_line, last_line
        assert not glob.glob(os.path.join(run, '**', atomic.STAGING_PREFIX + '*'), recursive=True)


def test_ctrl_c_before_the_first_checkpoint_leaves_no_run_folder_and_a_second_one_changes_nothing(
        quick_train_args, tmp_path):
    runs = str(tmp_path)
    process = _start_training(quick_train_args(runs, 40))
    deadline = time.monotonic() + CHILD_TIMEOUT
    while not glob.glob(os.path.join(runs, '2*')) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    _, stderr = _stop(process, signal.SIGINT)
    assert process.returncode == 1 and 'Traceback' not in stderr, stderr[-3000:]
    assert 'interrupted' in stderr.strip().splitlines()[-1]
    for run in glob.glob(os.path.join(runs, '2*')):  # a run that had reached a checkpoint is resumable
        assert run_folder.RunFolder(run).checkpoint('last') is not None


def _mounted_tmpfs(folder, size):
    """A small file system of `size` mounted on a new folder `folder` (skips the test where mount needs root)."""
    os.makedirs(folder)
    finished = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=%s' % size, 'tmpfs', folder],
                              capture_output=True, text=True, timeout=30)
    if finished.returncode:
        pytest.skip('cannot mount a small file system here (%s): needs root' % finished.stderr.strip())
    return folder


def _unmount(folder):
    subprocess.run(['umount', '-l', folder], capture_output=True, timeout=30)


def test_a_full_disk_stops_training_in_one_line_and_loses_nothing(quick_train_args, tmp_path):
    disk = _mounted_tmpfs(str(tmp_path / 'tmpfs'), '3m')
    try:
        _, stop = run_main(quick_train_args(os.path.join(disk, 'runs'), 2))
        assert 'the disk is full' in str(stop) and '\n' not in str(stop), stop
        leftovers = glob.glob(os.path.join(disk, 'runs', '*', '**', atomic.STAGING_PREFIX + '*'), recursive=True)
        assert not leftovers, leftovers
    finally:
        _unmount(disk)


def test_a_read_only_runs_folder_or_output_folder_ends_in_one_line(
        small_dataset, small_trained_run, quick_train_args, tmp_path):
    disk = _mounted_tmpfs(str(tmp_path / 'tmpfs'), '1m')
    try:
        os.makedirs(os.path.join(disk, 'runs'))
        subprocess.run(['mount', '-o', 'remount,ro', disk], check=True, timeout=30)
        _, stop = run_main(quick_train_args(os.path.join(disk, 'runs'), 1))
        assert 'cannot write' in str(stop) or 'cannot create' in str(stop), stop
        _, stop = run_main(['infer', '--model', small_trained_run, datasets.kitti_test_images(small_dataset)[0],
                            '--out', os.path.join(disk, 'runs')])
        assert 'Read-only' in str(stop) and '\n' not in str(stop), stop
    finally:
        _unmount(disk)


# --------------------------------------------------------------------------- runs that go wrong

def test_a_diverging_run_is_finished_from_its_best_checkpoint(quick_train_args, tmp_path):
    runs = str(tmp_path)
    run_main(quick_train_args(runs, 2))
    run = run_folder.RunFolder(only_run(runs))
    good = checkpoint_values(run.checkpoint('last')[0])
    best_epoch = run.checkpoint('best')[1]['epoch']
    os.remove(os.path.join(run.path, 'um_000000.png'))
    _, stop = run_main(['train', '--resume', run.path, '--epochs', '4', '--learning-rate', '1e6'])
    assert ('exploded' in stop or 'became' in stop) and 'finished from its best checkpoint' in stop, stop
    assert 'after %d rewinds' % fit.MAX_REWINDS in stop, stop
    assert '\n' not in stop
    assert same_values(checkpoint_values(run.checkpoint('last')[0]), good), 'no diverged weights were saved'
    assert run.checkpoint('best')[1]['epoch'] == best_epoch
    assert os.path.isfile(os.path.join(run.path, 'um_000000.png')), 'the overlays were written again'
    assert os.path.isfile(os.path.join(run.path, 'export', 'saved_model.pb'))


def test_an_explosion_rewinds_to_the_best_checkpoint_and_goes_on_at_half_the_rate(quick_train_args, tmp_path):
    runs = str(tmp_path)
    run_main(quick_train_args(runs, 2))
    run = run_folder.RunFolder(only_run(runs))
    config = dataclasses.replace(run.read_config(), epochs=4)
    prefix, state = run.checkpoint('last')
    best_epoch = run.checkpoint('best')[1]['epoch']
    fmt = datasets.label_format(config.dataset, config.classes)
    served = batches.TrainingBatches(config.train, tuple(config.image_shape), first_epoch=state['epoch'],
                                     to_onehot=fmt.to_onehot)
    first_batches = []

    def poisoned_once(batch_size):
        """Epoch 3's second batch has NaN labels: its update makes every weight NaN, as a real blow-up would."""
        call = len(first_batches)
        first_batches.append(None)
        for i, (images_, labels) in enumerate(served(batch_size)):
            first_batches[call] = images_ if i == 0 else first_batches[call]
            yield images_, np.full(labels.shape, np.nan, np.float32) if (call, i) == (0, 1) else labels

    poisoned_once.rewind_to = served.rewind_to

    tf.reset_default_graph()
    with tf.Session() as sess, run.owned():
        fcn8 = model.build_fcn8(sess, config.vgg_path, fmt.num_classes, tuple(config.skip_scales))
        model.restore_checkpoint(sess, prefix)
        reporter = fit.EpochReporter(sess, fcn8, run, config, state, schedules.LearningRate(config))
        fit.train_rewinding(sess, fcn8, run, config, poisoned_once, reporter)
    losses = reporter.losses  # the epochs kept: those after the best one, trained again
    assert sorted(losses) == list(range(best_epoch + 1, 5)) and np.all(np.isfinite(list(losses.values())))
    assert reporter.rewinds == 1, reporter.rewinds
    last_prefix, last_state = run.checkpoint('last')
    assert last_state['epoch'] == 4 and last_state['rate_share'] == fit.REWIND_RATE_SHARE, last_state
    assert all(np.all(np.isfinite(value)) for value in checkpoint_values(last_prefix).values())
    # The epoch after the rewind sees the batches that epoch saw the first time, as a resumed run would.
    resumed = batches.TrainingBatches(config.train, tuple(config.image_shape), first_epoch=best_epoch,
                                      to_onehot=fmt.to_onehot)
    assert np.array_equal(first_batches[1], next(resumed(config.batch_size))[0])
    rows = run.read_metrics()
    assert [int(row['epoch']) for row in rows] == [1, 2, 3, 4], rows
    # Back to the best epoch, then on at half the rate: the epochs after it were trained again.
    assert [float(row['learning_rate']) for row in rows] == [1e-3] * best_epoch + [5e-4] * (4 - best_epoch), rows


def test_the_loss_watch_catches_an_explosion_that_is_still_finite():
    watch = loop.LossWatch()
    for loss in [0.5, 0.4, 0.45, 0.3, 0.35, 0.3, 0.28, 0.3, 0.25, 0.27]:
        watch.check_batch(loss, 1)
    watch.check_batch(2.0, 1)  # a bad batch, not a divergence
    with pytest.raises(FloatingPointError) as caught:
        watch.check_batch(229.0, 1)
    assert 'exploded' in str(caught.value) and '--learning-rate' in str(caught.value), str(caught.value)
    watch = loop.LossWatch()
    watch.check_epoch(0.1, 1)
    watch.check_epoch(0.5, 2)
    with pytest.raises(FloatingPointError, match='exploded in epoch 3'):
        watch.check_epoch(2.9e3, 3)
    # A rewound run keeps its watch: the best epoch before the rewind still sets what counts as an explosion.
    with pytest.raises(FloatingPointError, match='exploded in epoch 34'):
        loop.LossWatch(best_epoch_mean=0.09).check_epoch(1.0, 34)


def test_out_of_memory_names_what_to_lower_and_keeps_the_checkpoints(quick_train_args, tmp_path, monkeypatch):
    """The training step raises TensorFlow's own ResourceExhaustedError after one good epoch (as TensorFlow's
    allocator does once it has waited 10 s for memory that never comes: raised here at once)."""
    runs = str(tmp_path)
    run_main(quick_train_args(runs, 1))
    run = only_run(runs)

    def train_nn_that_runs_out_of_memory(sess, *args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, 'OOM when allocating tensor with shape[8,4096,5,18]')

    with monkeypatch.context() as patched:
        patched.setattr(fit, 'train_nn', train_nn_that_runs_out_of_memory)
        _, stop = run_main(['train', '--resume', run, '--epochs', '2'])
    assert 'out of memory' in stop and '--batch-size' in stop and '--freeze-encoder' in stop, stop
    assert '--mixed-precision' in stop and '\n' not in stop
    assert run_folder.RunFolder(run).checkpoint('last')[1]['epoch'] == 1


def test_labels_in_another_format_stop_before_training_and_masks_train_when_asked(small_vgg, new_folder):
    data_dir = new_folder('masks')
    training_dir = os.path.join(data_dir, 'data_road', 'training')
    for i, category in enumerate(['um', 'um', 'umm', 'umm', 'uu', 'uu']):
        image = np.random.default_rng(i).integers(0, 256, (48, 96, 3)).astype(np.uint8)
        mask = np.zeros((48, 96), np.uint8)
        mask[24:] = 255
        image[24:] = 80  # the road is grey
        write_png(os.path.join(training_dir, 'image_2', '%s_%06d.png' % (category, i)), image)
        write_png(os.path.join(training_dir, 'gt_image_2', '%s_road_%06d.png' % (category, i)), mask)
    runs = new_folder('mask-runs')
    base = ['train', '--data-dir', data_dir, '--vgg-dir', small_vgg, '--runs-dir', runs, '--epochs', '1',
            '--image-shape', '48', '96', '--val-fraction', '0.5', '--no-augment']
    _, stop = run_main(base)
    assert 'not KITTI\'s road' in stop and '--labels mask' in stop and 'pixels' in stop, stop
    assert os.listdir(runs) == []
    out, stop = run_main(base + ['--labels', 'mask'])
    assert stop is None and 'train: done' in out, stop
    assert run_folder.RunFolder(only_run(runs)).read_config().dataset == 'kitti-mask'


def test_no_validation_set_means_the_last_epoch_is_the_model(quick_train_args, new_folder):
    runs = new_folder('no-val')
    out, stop = run_main(quick_train_args(runs, 2, '--val-fraction', '0'))
    assert stop is None and 'no validation set: the last epoch is the model' in out and 'MaxF -' not in out, out
    assert 'Exported the last checkpoint (epoch 2)' in out, out
    run = run_folder.RunFolder(only_run(runs))
    assert run.checkpoint('best')[1]['epoch'] == run.checkpoint('last')[1]['epoch'] == 2
    _, stop = run_main(quick_train_args(new_folder('no-train'), 1, '--val-fraction', '0.99'))
    assert 'leaves no training images' in stop, stop


def test_a_bad_test_image_is_skipped_and_named_after_training(small_dataset, quick_train_args, new_folder):
    data_dir = new_folder('bad-test')
    shutil.copytree(small_dataset, os.path.join(data_dir, 'data_road'))
    bad = os.path.join(data_dir, 'data_road', 'testing', 'image_2', 'uu_000099.png')
    with open(bad, 'wb') as f:
        f.write(b'not a png')
    argv = quick_train_args(new_folder('bad-test-runs'), 1)
    argv[argv.index('--data-dir') + 1] = data_dir
    out, stop = run_main(argv)
    assert stop is None and 'skipped' in out + str(stop) or 'unreadable' in out, (out, stop)
    assert '1 unreadable image(s) skipped' in out


def test_a_damaged_checkpoint_ends_in_one_line_that_names_the_way_out(quick_train_args, tmp_path):
    runs = str(tmp_path)
    run_main(quick_train_args(runs, 1))
    run = run_folder.RunFolder(only_run(runs))
    data = run.checkpoint('last')[0] + '.data-00000-of-00001'
    with open(data, 'r+b') as f:
        f.truncate(100)
    _, stop = run_main(['train', '--resume', run.path, '--epochs', '2'])
    assert 'checkpoints/last is damaged' in stop and 'delete that checkpoint folder' in stop, stop
    assert '\n' not in stop


def test_validation_labels_without_road_warn_and_the_run_still_finishes_from_its_last_checkpoint(
        small_dataset, quick_train_args, new_folder):
    data_dir = new_folder('no-road-val')
    shutil.copytree(small_dataset, os.path.join(data_dir, 'data_road'))
    pairs = datasets.kitti_road_pairs(os.path.join(data_dir, 'data_road', 'training'))
    _, val = splits.split_pairs(pairs, 1 / 6)
    for _, label_path in val:
        label = iio.imread(label_path)
        label[(label == datasets.ROAD_COLOR).all(axis=-1)] = datasets.NOT_ROAD_COLOR
        write_png(label_path, label)
    argv = quick_train_args(new_folder('no-road-runs'), 2)
    argv[argv.index('--data-dir') + 1] = data_dir
    out, stop = run_main(argv)
    assert stop is None and 'none of the 3 validation labels has a road pixel' in out, (out, stop)
    run = run_folder.RunFolder(only_run(argv[argv.index('--runs-dir') + 1]))
    assert run.checkpoint('best') is None and 'Exported the last checkpoint (epoch 2)' in out
    assert os.path.isfile(os.path.join(run.path, 'export', 'saved_model.pb'))


def test_finish_removes_what_killed_writes_left_in_the_run(quick_train_args, tmp_path):
    runs = str(tmp_path)
    run_main(quick_train_args(runs, 1))
    run = only_run(runs)
    for parent in (run, os.path.join(run, 'checkpoints')):
        os.makedirs(os.path.join(parent, atomic.STAGING_PREFIX + 'killed', 'variables'))
    out, stop = run_main(['finish', run])
    assert stop is None and 'finish: ' in out, stop
    assert not glob.glob(os.path.join(run, '**', atomic.STAGING_PREFIX + '*'), recursive=True)
