"""Tests of bench.py: the FLOP counter on hand-made graphs, the two data pipelines, the command line.

Nothing here asserts a speed: only counts, shapes and the form of the output.
"""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import helper
from roadseg.commands import bench
from roadseg.data import datasets, roadgen
from roadseg.process import graph_mode_tf
from tests.helpers import ROOT

tf = graph_mode_tf()

REQUIRED_JSON_KEYS = ('pipeline_classic_ips', 'pipeline_ips', 'pipeline_augmented_ips',
                      'pipeline_augmented_ips_cityscapes', 'train_ips', 'infer_ips', 'train_flops_ratio',
                      'infer_flops_ratio', 'peak_rss_mb')


def _flops_of(build):
    """count_flops of the fetches that `build()` returns (with a feed dict), in a fresh graph."""
    with tf.Graph().as_default(), tf.Session() as sess:
        fetches, feed = build()
        return bench.count_flops(sess, fetches, feed)


def _image(shape):
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def test_count_flops_of_a_convolution_and_of_its_gradients():
    # 3x3 kernel, 3 -> 4 channels, on a 5x7 map with SAME padding: 2 * (3*3*3*4) * (5*7) FLOPs.
    one_conv = 2 * 3 * 3 * 3 * 4 * 5 * 7

    def convolution(with_gradients):
        x = tf.placeholder(tf.float32, [None, None, None, 3])
        kernel = tf.constant(_image([3, 3, 3, 4]))
        y = tf.nn.conv2d(x, kernel, [1, 1, 1, 1], 'SAME')
        fetches = tf.gradients(tf.reduce_sum(y), [x, kernel]) if with_gradients else [y]
        return fetches, {x: _image([1, 5, 7, 3])}

    assert _flops_of(lambda: convolution(False)) == one_conv
    # Gradients: the forward pass, the input's gradient and the kernel's gradient cost one convolution each.
    assert _flops_of(lambda: convolution(True)) == 3 * one_conv


def test_count_flops_of_a_strided_transposed_convolution_counts_its_input_positions():
    # A 4x4 kernel, 2 -> 2 channels, upsampling a 2x3 map by 2 to 4x6: each of the 2*3 input
    # positions meets the whole kernel once (counting the 4x6 output positions would be 4x too many).
    def transposed_convolution():
        x = tf.placeholder(tf.float32, [None, None, None, 2])
        kernel = tf.constant(_image([4, 4, 2, 2]))
        y = tf.nn.conv2d_transpose(x, kernel, tf.constant([1, 4, 6, 2]), [1, 2, 2, 1], 'SAME')
        return [y], {x: _image([1, 2, 3, 2])}

    assert _flops_of(transposed_convolution) == 2 * 4 * 4 * 2 * 2 * (2 * 3)


def test_count_flops_of_matmuls_counts_only_what_the_run_executes():
    def matmuls():
        a = tf.placeholder(tf.float32, [None, 5])
        plain = tf.matmul(a, tf.constant(_image([5, 7])))                       # (3x5) (5x7)
        transposed = tf.matmul(tf.constant(_image([5, 3])), tf.constant(_image([7, 5])),
                               transpose_a=True, transpose_b=True)              # (3x5) (5x7)
        tf.matmul(a, tf.constant(_image([5, 100])))                             # never run
        return [plain, transposed], {a: _image([3, 5])}

    assert _flops_of(matmuls) == 2 * (2 * 3 * 5 * 7)


def test_classic_and_project_pipelines_yield_the_same_batches(tmp_path):
    data_road = roadgen.generate_dataset(str(tmp_path), n_train=5, n_test=1, image_shape=(60, 150), seed=2)
    training = os.path.join(data_road, 'training')
    pairs = datasets.kitti_road_pairs(training)
    classic = list(bench.classic_batches(pairs, (32, 64), 2, np.random.default_rng(0)))
    ours = list(helper.gen_batch_function(training, (32, 64))(2))
    assert [len(images) for images, _ in classic] == [len(images) for images, _ in ours] == [2, 2, 1]
    for (classic_images, classic_labels), (images, labels) in zip(classic, ours):
        assert classic_images.shape == images.shape and classic_images.dtype == images.dtype == np.uint8
        assert classic_labels.shape == labels.shape and classic_labels.dtype == labels.dtype == np.bool_

    def epoch_contents(batches):
        return sorted(image.tobytes() + label.tobytes() for images, labels in batches
                      for image, label in zip(images, labels))

    assert epoch_contents(classic) == epoch_contents(ours)


def test_full_batches_always_hold_the_batch_size():
    images = np.arange(3)[:, None]
    get_batches_fn = lambda batch_size: ((images[i:i + batch_size], images[i:i + batch_size])  # noqa: E731
                                         for i in range(0, len(images), batch_size))
    batches = bench.full_batches(get_batches_fn, 2)
    drawn = [next(batches) for _ in range(3)]
    assert [batch.ravel().tolist() for batch, _ in drawn] == [[0, 1], [2, 0], [1, 2]]


def test_command_line_rejects_bad_settings(capsys):
    for argv, expected in ((['--image-shape', '100', '576'], '--image-shape 100 576'),
                           (['--batch-size', '0'], '--batch-size'),
                           (['--data-dir', os.path.join(ROOT, 'no-such-folder')], 'no-such-folder')):
        with pytest.raises(SystemExit) as stop:
            bench.parse_args(argv)
        assert stop.value.code == 2, argv
        stderr = capsys.readouterr().err
        assert expected in stderr, stderr


def test_json_is_the_last_line_and_holds_every_figure():
    # Tiny everything: a 1/16-width VGG, 64x96, two generated images, short timings.
    # The deployed forms take five more processes: test_deployed_forms.py checks their table.
    argv = ['--image-shape', '64', '96', '--batch-size', '1', '--width', '0.0625', '--min-seconds', '0.2',
            '--matmul-size', '256', '--images', '2', '--json', '--no-forms']
    # Through main.py's `bench` command, as README documents it.
    finished = subprocess.run([sys.executable, os.path.join(ROOT, 'main.py'), 'bench'] + argv,
                              capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    lines = finished.stdout.strip().splitlines()
    results = json.loads(lines[-1])
    for key in REQUIRED_JSON_KEYS + ('exported_ips', 'exported_flops_ratio', 'exported_peak_rss_mb',
                                     'onednn_matmul_gflops', 'train_flops_ratio_onednn'):
        assert isinstance(results[key], float) and math.isfinite(results[key]) and results[key] > 0, (key, results)
    assert math.isclose(results['train_gflop_per_image'], 3 * results['forward_gflop_per_image'], rel_tol=1e-9)
    assert results['bars_missed'] is None  # the bars are for the full model at 160x576, batch 2
    assert results['pipeline_batch_size'] == 8 and results['pipeline_threads'] >= 1
    assert any(line.strip().startswith('training step') for line in lines[:-1])
    assert any(line.strip().startswith('data, decoded once, augmented: what train uses') for line in lines[:-1])
    assert any(line.strip().startswith('exported model (float32), as main.py infer runs it') for line in lines[:-1])
