"""The classic exercise's tests of main.py, and the command that runs the whole suite.

    python project_tests.py            every test (tests/, these included), one worker per core; last line
                                       "N passed, N failed, N skipped"
    python -m pytest                   the same suite under pytest itself, in one process

The classic tests keep their names and their leading arguments with defaults (a classic caller can still pass
load_vgg, layers, optimize, train_nn or data_dir), and check more than the classic ones do: a real SavedModel
loaded from disk, real gradients that lower the loss. The small models and data they need are pytest fixtures
(tests/conftest.py), taken as keyword-only arguments; tests/test_classic.py collects these tests with the rest,
so pytest runs them once whichever command starts it. test_load_vgg_calls_the_loader_as_the_classic_test_expects
mocks the loader the way the classic project_tests.py does.
"""
import glob
import os
import sys
from unittest import mock

import numpy as np
import pytest

import main
from roadseg import config, model
from roadseg.data import batches, datasets
from roadseg.process import graph_mode_tf
from tests.helpers import SMALL_SHAPE

HERE = os.path.dirname(os.path.abspath(__file__))
# pytest collects these tests through tests/test_classic.py, where the fixtures of tests/conftest.py apply; not
# from this file when it is named on pytest's command line (they would run twice, without their fixtures).
__test__ = False

tf = graph_mode_tf()

KITTI_TRAINING_IMAGES = 289
KITTI_TESTING_IMAGES = 290


def test_load_vgg(load_vgg=main.load_vgg, tf_module=tf, *, small_vgg):
    with tf_module.Graph().as_default(), tf_module.Session() as sess:
        tensors = load_vgg(sess, small_vgg)
        assert [t.name for t in tensors] == list(config.VGG_TENSOR_NAMES)
        image_input, keep_prob, layer3, layer4, layer7 = tensors
        out3, out4, out7 = sess.run([layer3, layer4, layer7], {image_input: np.full((2, 64, 96, 3), 128.0)})
        assert out3.shape[:3] == (2, 8, 12) and out4.shape[:3] == (2, 4, 6) and out7.shape[:3] == (2, 2, 3)
        assert np.isfinite(out7).all() and out7.std() > 0
        assert len(tf_module.trainable_variables()) == 30, 'the VGG weights must come back trainable'


def test_load_vgg_calls_the_loader_as_the_classic_test_expects():
    """The classic test swaps tf.saved_model.loader.load for a mock, passes vgg_path='' and checks the call."""
    with tf.Graph().as_default():
        sess = tf.Session()
        expected = [tf.placeholder(tf.float32, name=name.split(':')[0]) for name in config.VGG_TENSOR_NAMES]
        with mock.patch.object(tf.saved_model.loader, 'load') as loader:
            tensors = main.load_vgg(sess, '')
        assert loader.call_args == mock.call(sess, ['vgg16'], ''), loader.call_args
        assert list(tensors) == expected
        sess.close()


def test_layers(layers=main.layers):
    num_classes = 3
    with tf.Graph().as_default(), tf.Session() as sess:
        layer3 = tf.placeholder(tf.float32, [None, None, None, 16])
        layer4 = tf.placeholder(tf.float32, [None, None, None, 32])
        layer7 = tf.placeholder(tf.float32, [None, None, None, 64])
        output = layers(layer3, layer4, layer7, num_classes)
        assert output.shape.as_list()[-1] == num_classes
        sess.run(tf.global_variables_initializer())
        # An input of 64x160 gives pool3 8x20, pool4 4x10, layer7 2x5; output = input size.
        feed = {layer3: np.random.rand(2, 8, 20, 16), layer4: np.random.rand(2, 4, 10, 32),
                layer7: np.random.rand(2, 2, 5, 64)}
        assert sess.run(output, feed).shape == (2, 64, 160, num_classes)
        # 70x100 (not multiples of 32): VGG pools round up to 9x13, 5x7, 3x4 -> 72x104.
        feed = {layer3: np.random.rand(1, 9, 13, 16), layer4: np.random.rand(1, 5, 7, 32),
                layer7: np.random.rand(1, 3, 4, 64)}
        assert sess.run(output, feed).shape == (1, 72, 104, num_classes)
        kernels = [v for v in tf.trainable_variables() if v.op.name.endswith('kernel')]
        assert len(kernels) == 6 and len(tf.get_collection(tf.GraphKeys.REGULARIZATION_LOSSES)) == 6
        for kernel in kernels:
            # Truncated at 2 stddevs, whose std is 0.88 x stddev; the smallest kernel has 48 values, so the
            # bounds sit more than 4 standard errors from 0.88.
            stddev = model.UPSAMPLE_INIT_STDDEV if kernel.shape[0] > 1 else model.SCORE_INIT_STDDEV
            values = sess.run(kernel)
            assert 0.5 * stddev < values.std() < 1.25 * stddev and np.abs(values).max() <= 2 * stddev, kernel.name


def test_optimize(optimize=main.optimize):
    num_classes, shape = 2, (2, 4, 6)
    labels = np.zeros(shape + (num_classes,), np.float32)
    labels[..., 0] = 1
    labels[:, :2, :, :] = [0, 1]
    labels[:, -1, -1, :] = 0  # don't-care pixels
    # Features from which the labels are learnable: one channel tells road, four are noise.
    rng = np.random.default_rng(0)
    features = np.concatenate([labels[..., 1:] * 2 - 1, rng.standard_normal(shape + (4,))], axis=-1)
    with tf.Graph().as_default(), tf.Session() as sess:
        tf.set_random_seed(0)
        inputs = tf.placeholder_with_default(features.astype(np.float32), [None, None, None, 5])
        kernel = model._kernel('kernel', [1, 1, 5, num_classes], model.SCORE_INIT_STDDEV)
        last_layer = tf.nn.conv2d(inputs, kernel, [1, 1, 1, 1], 'SAME')
        correct_label = tf.placeholder(tf.float32, [None, None, None, num_classes])
        learning_rate = tf.placeholder(tf.float32)
        logits, train_op, loss = optimize(last_layer, correct_label, learning_rate, num_classes)
        assert logits.shape.as_list() == [None, num_classes], logits.shape
        sess.run(tf.global_variables_initializer())
        # The loss is the mean cross-entropy over labelled pixels plus L2.
        flat_logits, first_loss, k = sess.run([logits, loss, kernel], {correct_label: labels})
        flat_labels = labels.reshape(-1, num_classes)
        log_softmax = flat_logits - np.log(np.exp(flat_logits).sum(axis=1, keepdims=True))
        labelled = flat_labels.sum(axis=1) > 0
        expected = -(flat_labels * log_softmax).sum(axis=1)[labelled].mean() + model.L2_SCALE * (k ** 2).sum() / 2
        assert abs(first_loss - expected) < 1e-5, (first_loss, expected)
        for _ in range(50):
            sess.run(train_op, {correct_label: labels, learning_rate: 0.05})
        last_loss = sess.run(loss, {correct_label: labels})
        assert last_loss < 0.5 * first_loss, (first_loss, last_loss)


def test_train_nn(train_nn=main.train_nn, *, small_vgg, small_dataset):
    with tf.Graph().as_default(), tf.Session() as sess:
        tf.set_random_seed(0)
        fcn8 = model.build_fcn8(sess, small_vgg, model.NUM_CLASSES, skip_scales=(1, 1))
        get_batches_fn = batches.TrainingBatches(
            datasets.kitti_road_pairs(os.path.join(small_dataset, 'training')), SMALL_SHAPE)
        history = train_nn(sess, 8, 4, get_batches_fn, fcn8.train_op, fcn8.loss, fcn8.image_input,
                           fcn8.correct_label, fcn8.keep_prob, fcn8.learning_rate, keep_prob_value=1.0,
                           learning_rate_value=1e-3)
        assert len(history) == 8 and all(np.isfinite(history))
        assert history[-1] < 0.9 * history[0], history

        def poisoned_batches(batch_size):
            images, labels = next(get_batches_fn(batch_size))
            yield images, np.full(labels.shape, np.nan, np.float32)

        with pytest.raises(FloatingPointError, match='--learning-rate'):
            train_nn(sess, 1, 2, poisoned_batches, fcn8.train_op, fcn8.loss, fcn8.image_input, fcn8.correct_label,
                     fcn8.keep_prob, fcn8.learning_rate)


def test_for_kitti_dataset(data_dir=os.path.join(HERE, 'data')):
    training = os.path.join(data_dir, 'data_road', 'training')
    if not os.path.isdir(training):
        pytest.skip('KITTI Road is not in %s (see README, "Get the data and the VGG model")' % data_dir)
    pairs = datasets.kitti_road_pairs(training)
    testing = glob.glob(os.path.join(data_dir, 'data_road', 'testing', 'image_2', '*.png'))
    assert len(pairs) == KITTI_TRAINING_IMAGES, 'expected %d training images, found %d' % (
        KITTI_TRAINING_IMAGES, len(pairs))
    assert len(testing) == KITTI_TESTING_IMAGES, 'expected %d test images, found %d' % (
        KITTI_TESTING_IMAGES, len(testing))


# --------------------------------------------------------------------------- the whole suite

class OutcomeCounter:
    """A pytest plugin that counts tests by outcome: failed if its setup, call or teardown failed (errors
    included), skipped if it was skipped, passed otherwise; a file that fails to collect counts as failed."""

    def __init__(self):
        self.outcomes = {}

    def pytest_runtest_logreport(self, report):
        if report.failed:
            self.outcomes[report.nodeid] = 'failed'
        elif report.skipped and self.outcomes.get(report.nodeid) != 'failed':
            self.outcomes[report.nodeid] = 'skipped'
        elif report.when == 'call':
            self.outcomes.setdefault(report.nodeid, 'passed')

    def pytest_collectreport(self, report):
        if report.failed:
            self.outcomes[report.nodeid] = 'failed'

    def count(self, outcome):
        return sum(value == outcome for value in self.outcomes.values())


def run_suite(args=()):
    """Run tests/ under pytest, one worker per core (pytest-xdist: much of the suite is single-threaded work in
    child processes, which the workers overlap; an idle worker steals queued tests, so that a few long ones at the
    end do not leave a core idle); print the counts as the last line; return the exit status."""
    counter = OutcomeCounter()
    exit_code = pytest.main(['-p', 'no:cacheprovider', '-rfEs', '--numprocesses', 'auto', '--dist', 'worksteal',
                             '--rootdir', HERE,
                             os.path.join(HERE, 'tests'), *args], plugins=[counter])
    passed, failed, skipped = (counter.count(outcome) for outcome in ('passed', 'failed', 'skipped'))
    sys.stdout.flush()
    print('%d passed, %d failed, %d skipped' % (passed, failed, skipped), flush=True)
    return 0 if exit_code == pytest.ExitCode.OK and not failed else 1  # NO_TESTS_COLLECTED is not OK


if __name__ == '__main__':
    sys.exit(run_suite(sys.argv[1:]))
