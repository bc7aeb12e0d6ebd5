"""The training recipe's parts: colour and zoom jitter, the learning-rate schedule, the CamVid demo's defaults.

Each is checked by what it does (pixels, labels, the steps Adam takes), in a few seconds in all; the recipe's
held-out figures come from the documented commands in README, not from here.
"""
import json
import os
import re
import types

import numpy as np
import pytest

from roadseg import cli, config, errors
from roadseg.data import batches, datasets
from roadseg.process import graph_mode_tf
from roadseg.serving import inference, onnx_export
from roadseg.training import loop, schedules
from tests.helpers import only_run, run_main, write_camvid

tf = graph_mode_tf()


# --------------------------------------------------------------------------- colour and zoom jitter

def test_saturation_and_gamma_do_what_their_names_say():
    pixels = np.array([[[200.0, 100.0, 60.0], [90.0, 90.0, 90.0]]], np.float32)
    grey = batches.saturate(pixels, 0.0)
    assert np.allclose(grey, grey[..., :1]) and np.allclose(grey.mean(axis=-1), pixels.mean(axis=-1))
    assert np.allclose(batches.saturate(pixels, 1.0), pixels)
    assert np.allclose(batches.saturate(pixels, 1.5)[0, 0], [240, 90, 30]), 'colour spread 1.5 times, grey kept'
    levels = np.array([0.0, 127.5, 255.0], np.float32)
    assert np.allclose(batches.apply_gamma(levels, 2.0), [0, 63.75, 255]), 'darker mid-tones, ends fixed'
    assert batches.apply_gamma(levels, 0.5)[1] > 127.5


def _mirrored_or_same(augmented, original):
    return np.array_equal(augmented, original) or np.array_equal(augmented, original[:, ::-1])


def test_colour_jitter_moves_the_images_and_never_the_labels():
    rng = np.random.default_rng(0)
    ramp = np.repeat(np.array([40, 120, 200], np.uint8), 8)  # three equally spaced grey levels
    images = np.broadcast_to(ramp[None, None, :, None], (16, 6, 24, 3)).copy()
    labels = rng.integers(0, 3, size=(16, 6, 24)).astype(np.uint8)
    still = batches.augment_batch(rng, images, labels, batches.Augmentation(zoom=(1, 1), color=0.0))
    assert all(_mirrored_or_same(*pair) for pair in zip(still[0], images)), 'no jitter at strength 0'
    jittered, jittered_labels = batches.augment_batch(rng, images, labels, batches.Augmentation(zoom=(1, 1), color=0.3))
    curved = 0
    for image, label, original_image, original_label in zip(jittered, jittered_labels, images, labels):
        flipped = not np.array_equal(label, original_label)
        assert np.array_equal(label, original_label[:, ::-1] if flipped else original_label)
        image = image[:, ::-1] if flipped else image
        assert not np.array_equal(image, original_image)
        low, middle, high = image[0, [0, 8, 16], 0].astype(int)
        curved += abs((middle - low) - (high - middle)) > 2  # a brightness/contrast change alone is affine
    assert curved >= 8, 'gamma bends the levels of most images'


def _longest_run(row):
    edges = np.flatnonzero(np.diff(np.concatenate([[0], row, [0]])))
    return int((edges[1::2] - edges[::2]).max(initial=0))


def test_zoom_below_one_shrinks_the_scene_and_keeps_each_label_on_its_pixels():
    images = np.zeros((8, 32, 32, 3), np.uint8)
    labels = np.zeros((8, 32, 32), np.uint8)
    images[:, 8:24, 8:24], labels[:, 8:24, 8:24] = 200, 1  # a 16x16 road square
    zoomed, zoomed_labels = batches.augment_batch(np.random.default_rng(1), images, labels,
                                                  batches.Augmentation(zoom=(0.5, 0.5), color=0.0))
    assert zoomed.shape == images.shape and zoomed_labels.shape == labels.shape
    for image, label in zip(zoomed, zoomed_labels):
        assert max(_longest_run(row) for row in label) == 8, 'the square (mirrored at the borders) is half as wide'
        assert image[label == 1].min() >= 100 and image[label == 0].max() <= 100, 'labels on their pixels'


# --------------------------------------------------------------------------- the learning-rate schedule

def _schedule(epochs, warmup_epochs, lr_schedule='cosine', learning_rate=1e-3):
    settings = types.SimpleNamespace(epochs=epochs, warmup_epochs=warmup_epochs, lr_schedule=lr_schedule,
                                     learning_rate=learning_rate)
    return schedules.learning_rate_schedule(settings)


def test_cosine_schedule_warms_up_then_decays_to_its_final_share():
    rates = [_schedule(10, 2)(epoch) for epoch in range(1, 11)]
    assert np.allclose(rates[:3], [1e-3 / 3, 2e-3 / 3, 1e-3])
    assert all(later < earlier for earlier, later in zip(rates[2:], rates[3:])), 'falls after the warm-up'
    assert np.isclose(rates[-1], 1e-3 * schedules.FINAL_RATE_SHARE)
    assert [_schedule(4, 0, 'constant')(epoch) for epoch in range(1, 5)] == [1e-3] * 4


def _step_per_epoch(gradient, rate_of, epsilon_of=None):
    """train_nn over 4 epochs of two steps on a loss whose gradient is constant: the mean step of each epoch."""
    with tf.Graph().as_default(), tf.Session() as sess:
        image, label = tf.placeholder(tf.float32, [None]), tf.placeholder(tf.float32, [None])
        keep_prob, rate = tf.placeholder(tf.float32, []), tf.placeholder(tf.float32, [])
        epsilon = tf.placeholder_with_default(1e-8, [])
        weight = tf.Variable(1.0)
        loss = gradient * weight + 0 * (tf.reduce_sum(image) + tf.reduce_sum(label) + keep_prob)
        train_op = tf.train.AdamOptimizer(rate, epsilon=epsilon).minimize(loss)
        sess.run(tf.global_variables_initializer())
        weights = [sess.run(weight)]

        def two_batches(batch_size):
            return iter([(np.zeros(1), np.zeros(1))] * 2)

        hooks = loop.EpochHooks(on_epoch_end=lambda epoch, mean_loss: weights.append(sess.run(weight)) and '')
        if epsilon_of:
            hooks.feed_of_epoch = lambda epoch: {epsilon: epsilon_of(epoch)}
        loop.train_nn(sess, 4, 2, two_batches, train_op, loss, image, label, keep_prob, rate,
                      learning_rate_value=rate_of, hooks=hooks)
    return -np.diff(weights) / 2


def test_the_scheduled_rate_reaches_every_training_step():
    """Adam's step on a constant gradient is the learning rate itself: the weight moves by each epoch's rate."""
    schedule = _schedule(4, 1, learning_rate=0.01)
    moved = _step_per_epoch(1.0, schedule)
    assert np.allclose(moved, [schedule(epoch) for epoch in range(1, 5)], rtol=1e-4), moved


def test_the_late_adam_epsilon_takes_over_halfway_through_the_epochs_after_the_warm_up():
    settings = types.SimpleNamespace(epochs=30, warmup_epochs=2, adam_epsilon=1e-8, late_adam_epsilon=1e-3)
    assert schedules.late_phase_start(settings) == 17
    epsilon_of = schedules.adam_epsilon_schedule(settings)
    assert [epsilon_of(epoch) for epoch in (1, 16, 17, 30)] == [1e-8, 1e-8, 1e-3, 1e-3]
    unset = types.SimpleNamespace(epochs=30, warmup_epochs=2, adam_epsilon=1e-6, late_adam_epsilon=0.0)
    assert schedules.adam_epsilon_schedule(unset)(30) == 1e-6


def test_the_late_adam_epsilon_reaches_the_training_steps_of_the_late_phase():
    # A gradient of 1e-3: at epsilon 1e-8 Adam steps by the rate; from epoch 3, the late phase of 4 epochs, at
    # epsilon 1e-2 the step is a few hundredths of it.
    settings = types.SimpleNamespace(epochs=4, warmup_epochs=0, adam_epsilon=1e-8, late_adam_epsilon=1e-2)
    moved = _step_per_epoch(1e-3, lambda epoch: 0.01, schedules.adam_epsilon_schedule(settings))
    assert np.allclose(moved[:2], 0.01, rtol=1e-3) and (moved[2:] < 0.0005).all(), moved


# --------------------------------------------------------------------------- flags and run.json

def _camvid_folder(root):
    """The CamVid layout's folders, empty, in `root`."""
    for split in ('train', 'trainannot', 'val', 'valannot'):
        os.makedirs(os.path.join(root, split))
    return root


def test_the_camvid_demo_has_its_own_defaults_and_explicit_flags_win(new_folder):
    camvid = cli.parse_args(['demo', '--data-dir', _camvid_folder(new_folder('camvid-layout'))])
    for name, value in config.CAMVID_DEMO_RECIPE.items():
        assert getattr(camvid, name) == (tuple(value) if isinstance(value, list) else value), name
    generated = cli.parse_args(['demo'])
    assert generated.epochs == config.GENERATED_DEMO_RECIPE['epochs'] != camvid.epochs
    assert generated.lr_schedule == config.GENERATED_DEMO_RECIPE['lr_schedule']
    given = cli.parse_args(['demo', '--data-dir', _camvid_folder(new_folder('camvid-layout')), '--epochs', '2',
                            '--no-augment'])
    assert given.epochs == 2 and not given.augment and given.lr_schedule == camvid.lr_schedule


def test_recipe_flags_out_of_range_are_refused_in_one_line():
    for flags, text in ((['--zoom', '0', '1'], '--zoom'), (['--zoom', '1.2', '1.1'], '--zoom'),
                        (['--color-jitter', '1'], '--color-jitter'),
                        (['--label-smoothing', '1'], '--label-smoothing'),
                        (['--label-smoothing', 'nan'], '--label-smoothing'),
                        (['--adam-epsilon', '0'], '--adam-epsilon'), (['--adam-epsilon', 'inf'], '--adam-epsilon'),
                        (['--late-adam-epsilon', '-1'], '--late-adam-epsilon'),
                        (['--late-adam-epsilon', 'nan'], '--late-adam-epsilon'),
                        (['--lovasz-weight', '-1'], '--lovasz-weight'), (['--lovasz-weight', 'inf'], '--lovasz-weight'),
                        (['--warmup-epochs', '-1'], '--warmup-epochs'),
                        (['--average-weights', '--epochs', '2', '--warmup-epochs', '2'], '--average-weights'),
                        (['--scales', '1', '0'], '--scales'), (['--scales', '5'], '--scales'),
                        (['--scales', 'nan'], '--scales')):
        with pytest.raises(errors.UserError, match=re.escape(text)):
            cli.parse_args(['train'] + flags)


def test_a_run_json_from_before_the_recipe_flags_resumes_with_the_classic_settings():
    fields = dict(dataset='kitti', classes='road', data_root='/d', vgg_path='/v', image_shape=[160, 576],
                  batch_size=8, learning_rate=1e-4, keep_prob=0.5, skip_scales=[0.01, 0.0001], seed=0, epochs=25,
                  augment=True, freeze_encoder=False, xla=False, mixed_precision=False, clip_norm=0.0, train=[],
                  val=[], test=[], test_images=[])
    old = config.RunConfig.from_json(json.dumps(fields), 'run.json')
    assert (old.zoom, old.color_jitter) == (batches.Augmentation.zoom, batches.Augmentation.color)
    assert (old.lr_schedule, old.warmup_epochs, old.label_smoothing) == ('constant', 0, 0.0)
    assert old.adam_epsilon == config.ADAM_EPSILON
    assert (old.flip_average, old.scales) == (False, (1.0,))
    assert config.RunConfig.from_json(old.to_json(), 'run.json') == old


# --------------------------------------------------------------------------- the CamVid demo, end to end

def _camvid_demo(root, vgg, *flags):
    """The CamVid demo for one epoch at a small size, with --vgg-dir vgg, or its own encoder if vgg is None."""
    runs_dir = os.path.join(root, 'runs')
    vgg_flags = ['--vgg-dir', vgg] if vgg else []
    out, exit_value = run_main(['demo', '--data-dir', root, *vgg_flags, '--runs-dir', runs_dir, '--epochs', '1',
                                '--image-shape', '32', '48', '--batch-size', '2', *flags])
    assert exit_value is None, exit_value
    run = only_run(runs_dir)
    with open(os.path.join(run, 'run.json')) as f:
        run_config = json.load(f)
    drives = {split: {datasets.camvid_drive(image) for image, _ in run_config[split]} for split in ('train', 'val')}
    overlays = sorted(name for name in os.listdir(run) if name.endswith('.png'))
    return out.strip().splitlines(), run, drives, overlays


def test_the_camvid_demo_trains_on_every_drive_and_ends_with_test_by_drive_or_says_nothing_measured_it(new_folder,
                                                                                                     small_vgg):
    lines, run, drives, overlays = _camvid_demo(write_camvid(new_folder('camvid'), with_test=True), small_vgg)
    assert drives == {'train': {'0001TP', '0006R0', '0016E5'}, 'val': set()}, drives
    assert lines[-1].startswith('demo: test road IoU ') and lines[-1].endswith(
        'on 2 test images (test includes 2 byte-for-byte copies of training images), model and 2 overlays in %s'
        % run), lines[-1]
    with open(os.path.join(run, 'test_metrics.json')) as f:
        measured = json.load(f)
    assert 0 <= measured['iou'] <= 1 and set(measured['groups']) == {'Seq05VD'}, measured
    assert overlays == ['Seq05VD_000000.png', 'Seq05VD_000001.png']
    exported = inference.ExportedModel(run)
    assert (exported.info.classes, exported.info.flip_average, exported.info.scales) == (
        'road', True, config.CAMVID_DEMO_RECIPE['scales']), exported.info
    exported.close()

    lines, run, drives, overlays = _camvid_demo(write_camvid(new_folder('camvid')), small_vgg)
    assert lines[-1].startswith('demo: no test/ split in ') and 'nothing measured the model' in lines[-1], lines[-1]
    assert not os.path.exists(os.path.join(run, 'test_metrics.json'))


def test_the_camvid_demo_with_a_drive_held_out_says_the_figure_is_that_drives(new_folder, small_vgg):
    lines, run, drives, overlays = _camvid_demo(write_camvid(new_folder('camvid')), small_vgg, '--val-drive', '0006R0')
    assert drives == {'train': {'0001TP', '0016E5'}, 'val': {'0006R0'}}, drives
    assert lines[-1].startswith('demo: no test/ split in ') and 'validation road IoU' in lines[-1], lines[-1]
    assert 'on 2 images of drive 0006R0' in lines[-1] and not os.path.exists(os.path.join(run, 'test_metrics.json'))
    assert overlays == ['0006R0_000000.png', '0006R0_000001.png']
    assert any(line.startswith('Saved 2 overlays of the validation images') for line in lines)


def test_the_camvid_demo_builds_its_group_norm_encoder_and_exports_it_to_onnx(new_folder, monkeypatch):
    root = write_camvid(new_folder('camvid'))
    monkeypatch.chdir(new_folder('cwd'))  # the CamVid demo builds its encoder in ./data/demo
    # One size: the export's check runs every size of --scales through ONNX, and one is enough to convert.
    lines, run, drives, overlays = _camvid_demo(root, None, '--val-drive', '0006R0', '--scales', '1')
    encoder = os.path.join('data', 'demo', config.CAMVID_DEMO_VGG.folder)
    with open(os.path.join(run, 'run.json')) as f:
        assert os.path.samefile(json.load(f)['vgg_path'], encoder)
    shapes = dict(tf.train.list_variables(os.path.join(encoder, 'variables', 'variables')))
    width = config.CAMVID_DEMO_VGG.width
    assert shapes['block3_conv3/gamma'] == shapes['block3_conv3/beta'] == [round(256 * width)]
    assert shapes['fc7/gamma'] == [round(4096 * width)]
    path = os.path.join(new_folder('export'), 'model.onnx')
    out, exit_value = run_main(['export', '--model', run, '--onnx', path])
    assert exit_value is None and os.path.isfile(path), out
    largest = float(re.search(r'largest difference (\S+)', out).group(1))
    assert largest <= onnx_export.MAX_DIFFERENCE, out
