"""Tests of main.py and helper.py, on real files: SavedModels, PNGs, training steps.

    python project_tests.py            run these and tests/test_*.py; last line "N passed, N failed"
    python -m pytest project_tests.py tests/

The classic exercise's tests keep their names and arguments (with defaults, so
pytest and the runner below both call them as they are). Small shapes keep the
suite fast on a CPU; the real KITTI sample in ../shared is used when present.
"""
import atexit
import contextlib
import functools
import glob
import http.server
import importlib.util
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import unittest
import zipfile

import imageio.v3 as iio
import numpy as np

import batches
import datasets
import downloads
import errors
import evaluation
import helper
import images
import inference
import main
import model
import process_tuning
import road_metrics
import roadgen
import run_folder
import training
import vgg_builder
from tfv1 import tf

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED_KITTI = os.path.join(HERE, '..', 'shared', 'data', 'kitti_road_sample', 'data_road')
KITTI_TRAINING_IMAGES = 289
SMALL_WIDTH = 1 / 16
SMALL_SHAPE = (64, 192)


# --------------------------------------------------------------------------- shared fixtures

_SCRATCH = tempfile.mkdtemp(prefix='fcn8-tests-')
atexit.register(shutil.rmtree, _SCRATCH, ignore_errors=True)


def scratch_dir(name):
    """A fresh folder inside the suite's temporary directory."""
    return tempfile.mkdtemp(prefix=name + '-', dir=_SCRATCH)


@functools.lru_cache(maxsize=None)
def small_vgg():
    """A small VGG16-shaped SavedModel on disk, built once for the suite."""
    return vgg_builder.write_random_vgg16(os.path.join(scratch_dir('vgg'), 'vgg'), width=SMALL_WIDTH, seed=1)


@functools.lru_cache(maxsize=None)
def small_dataset():
    """A generated KITTI-layout dataset (its data_road folder), built once for the suite."""
    return roadgen.generate_dataset(scratch_dir('kitti'), n_train=12, n_test=8, image_shape=(94, 310), seed=3)


def write_png(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    iio.imwrite(path, np.asarray(image, np.uint8))
    return path


def kitti_label(height, width, road_rows):
    """A KITTI colour label: road in `road_rows`, not-road elsewhere, don't-care in the last row."""
    label = np.zeros((height, width, 3), np.uint8)
    label[:] = datasets.NOT_ROAD_COLOR
    label[road_rows] = datasets.ROAD_COLOR
    label[-1] = 0
    return label


def expect_error(error_type, function, *args, contains=(), **kwargs):
    """Call function and check it raises error_type whose message holds every string in `contains`."""
    try:
        function(*args, **kwargs)
    except error_type as error:
        message = str(error)
        for text in contains:
            assert text in message, 'expected %r in the error message %r' % (text, message)
        return message
    raise AssertionError('%s did not raise %s' % (getattr(function, '__name__', function), error_type.__name__))


class LocalServer:
    """Serves a folder over HTTP on 127.0.0.1, so downloads run for real without internet."""

    def __init__(self, folder):
        handler = functools.partial(_QuietHandler, directory=folder)
        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, name):
        return 'http://127.0.0.1:%d/%s' % (self.server.server_address[1], name)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def zip_folder(folder, archive, arcname):
    with zipfile.ZipFile(archive, 'w') as zf:
        for path in glob.glob(os.path.join(folder, '**'), recursive=True):
            if os.path.isfile(path):
                zf.write(path, os.path.join(arcname, os.path.relpath(path, folder)))
    return archive


def closed_port_url(name):
    """An address on this machine where nothing listens: a download there fails at once."""
    with http.server.HTTPServer(('127.0.0.1', 0), _QuietHandler) as probe:
        port = probe.server_address[1]
    return 'http://127.0.0.1:%d/%s' % (port, name)


# --------------------------------------------------------------------------- the classic tests

def test_load_vgg(load_vgg=main.load_vgg, tf_module=tf):
    with tf_module.Graph().as_default(), tf_module.Session() as sess:
        tensors = load_vgg(sess, small_vgg())
        names = [t.name for t in tensors]
        assert names == list(model.VGG_TENSOR_NAMES), names
        image_input, keep_prob, layer3, layer4, layer7 = tensors
        out3, out4, out7 = sess.run([layer3, layer4, layer7], {image_input: np.full((2, 64, 96, 3), 128.0)})
        assert out3.shape[:3] == (2, 8, 12) and out4.shape[:3] == (2, 4, 6) and out7.shape[:3] == (2, 2, 3)
        assert np.isfinite(out7).all() and out7.std() > 0
        assert len(tf_module.trainable_variables()) == 30, 'the VGG weights must come back trainable'


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


def test_layers_static_shape_matches_a_real_vgg(layers=main.layers):
    with tf.Graph().as_default(), tf.Session() as sess:
        image_input, _, layer3, layer4, layer7 = main.load_vgg(sess, small_vgg())
        output = layers(layer3, layer4, layer7, 2)
        sess.run(tf.variables_initializer([v for v in tf.global_variables() if 'fcn8' in v.name]))
        assert sess.run(output, {image_input: np.zeros((1, 96, 128, 3))}).shape == (1, 96, 128, 2)


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


def _small_fcn8(sess):
    return model.build_fcn8(sess, small_vgg(), model.NUM_CLASSES)


def test_train_nn(train_nn=main.train_nn):
    with tf.Graph().as_default(), tf.Session() as sess:
        tf.set_random_seed(0)
        model = _small_fcn8(sess)
        get_batches_fn = helper.gen_batch_function(os.path.join(small_dataset(), 'training'), SMALL_SHAPE)
        history = train_nn(sess, 4, 4, get_batches_fn, model.train_op, model.loss, model.image_input,
                           model.correct_label, model.keep_prob, model.learning_rate, keep_prob_value=1.0,
                           learning_rate_value=1e-3)
        assert len(history) == 4 and all(np.isfinite(history))
        assert history[-1] < history[0], history

        def poisoned_batches(batch_size):
            images, labels = next(get_batches_fn(batch_size))
            yield images, np.full(labels.shape, np.nan, np.float32)

        expect_error(FloatingPointError, train_nn, sess, 1, 2, poisoned_batches, model.train_op, model.loss,
                     model.image_input, model.correct_label, model.keep_prob, model.learning_rate,
                     contains=('--learning-rate',))


def test_for_kitti_dataset(data_dir=os.path.join(HERE, 'data')):
    training = os.path.join(data_dir, 'data_road', 'training')
    if not os.path.isdir(training):
        raise unittest.SkipTest('KITTI Road is not in %s (see README: "Get KITTI Road")' % data_dir)
    pairs = datasets.kitti_road_pairs(training)
    testing = glob.glob(os.path.join(data_dir, 'data_road', 'testing', 'image_2', '*.png'))
    assert len(pairs) == KITTI_TRAINING_IMAGES, 'expected %d training images, found %d' % (
        KITTI_TRAINING_IMAGES, len(pairs))
    assert len(testing) == 290, 'expected 290 test images, found %d' % len(testing)


# --------------------------------------------------------------------------- load_vgg on bad models

def _write_savedmodel(export_dir, tag, tensor_names):
    with tf.Graph().as_default(), tf.Session() as sess:
        x = tf.placeholder(tf.float32, [None, None, None, 3], name='image_input')
        for name in tensor_names:
            tf.identity(x, name=name)
        builder = tf.saved_model.Builder(export_dir)
        builder.add_meta_graph_and_variables(sess, [tag])
        builder.save()
    return export_dir


def test_load_vgg_explains_a_bad_model():
    folder = scratch_dir('badvgg')
    with tf.Graph().as_default(), tf.Session() as sess:
        expect_error(errors.VGGModelError, main.load_vgg, sess, os.path.join(folder, 'absent'),
                     contains=('no SavedModel', 'absent'))
        wrong_tag = _write_savedmodel(os.path.join(folder, 'wrong_tag'), 'serve', ['layer3_out'])
        expect_error(errors.VGGModelError, main.load_vgg, sess, wrong_tag, contains=('vgg16', 'serve'))
    with tf.Graph().as_default(), tf.Session() as sess:
        partial = _write_savedmodel(os.path.join(folder, 'partial'), 'vgg16', ['layer3_out', 'layer4_out'])
        expect_error(errors.VGGModelError, main.load_vgg, sess, partial,
                     contains=('keep_prob:0', 'layer7_out:0', 'image_input'))


# --------------------------------------------------------------------------- the VGG builder

def test_random_vgg16_has_the_vgg16_structure_at_any_width():
    full = vgg_builder.vgg16_kernel_shapes()
    assert len(full) == 15 and full['block1_conv1'] == (3, 3, 3, 64) and full['block5_conv3'] == (3, 3, 512, 512)
    assert full['fc6'] == (7, 7, 512, 4096) and full['fc7'] == (1, 1, 4096, 4096)
    small = vgg_builder.vgg16_kernel_shapes(0.25)
    assert small['block3_conv3'] == (3, 3, 64, 64) and small['fc7'] == (1, 1, 1024, 1024)
    weights = vgg_builder.random_vgg16_weights(0.25, seed=4)
    again = vgg_builder.random_vgg16_weights(0.25, seed=4)
    assert all(np.array_equal(weights[n][0], again[n][0]) for n in weights), 'same seed, same weights'
    fan_in = 3 * 3 * 64
    assert abs(weights['block3_conv3'][0].std() - np.sqrt(2 / fan_in)) < 0.01
    expect_error(ValueError, vgg_builder.vgg16_kernel_shapes, 0, contains=('width',))


def test_write_vgg16_savedmodel_refuses_to_overwrite():
    target = small_vgg()
    expect_error(FileExistsError, vgg_builder.write_random_vgg16, target, SMALL_WIDTH, contains=(target,))
    leftovers = [name for name in os.listdir(os.path.dirname(target)) if name != 'vgg']
    assert leftovers == [], leftovers


KERAS_REFERENCE_SCRIPT = """
import sys
import keras
import numpy as np
keras.utils.set_random_seed(0)
model = keras.applications.VGG16(weights=None, include_top=True)
model.save_weights(sys.argv[1])
probe = keras.Model(model.input, [model.get_layer(n).output for n in ('block3_pool', 'block4_pool', 'fc2')])
images = np.load(sys.argv[2])
outputs = probe.predict(keras.applications.vgg16.preprocess_input(images.copy()), verbose=0)
np.savez(sys.argv[3], block3_pool=outputs[0], block4_pool=outputs[1], fc2=outputs[2])
"""


def _keras_reference(folder, images):
    """Weights and activations of a random Keras VGG16, from a separate (eager) Python."""
    script, weights = os.path.join(folder, 'reference.py'), os.path.join(folder, 'random_vgg16.weights.h5')
    inputs, outputs = os.path.join(folder, 'images.npy'), os.path.join(folder, 'activations.npz')
    with open(script, 'w') as f:
        f.write(KERAS_REFERENCE_SCRIPT)
    np.save(inputs, images)
    subprocess.run([sys.executable, script, weights, inputs, outputs], check=True, capture_output=True)
    return weights, dict(np.load(outputs))


def _relative_error(actual, expected):
    return np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12)


def test_keras_vgg16_converts_exactly_and_is_the_fallback_source():
    """Keras' VGG16 (random weights, no download) served over HTTP, fetched when vgg.zip fails, converted."""
    folder = scratch_dir('keras')
    images = np.random.default_rng(0).uniform(0, 255, (1, 224, 224, 3)).astype(np.float32)
    weights, expected = _keras_reference(folder, images)
    data_dir, keras_home = scratch_dir('data'), scratch_dir('keras-home')
    previous_home = os.environ.get('KERAS_HOME')
    os.environ['KERAS_HOME'] = keras_home
    try:
        with LocalServer(folder) as server:
            vgg_path = downloads.ensure_vgg(data_dir, 'udacity', udacity_url=closed_port_url('vgg.zip'),
                                         keras_url=server.url(os.path.basename(weights)))
    finally:
        if previous_home is None:
            del os.environ['KERAS_HOME']
        else:
            os.environ['KERAS_HOME'] = previous_home
    assert os.path.isfile(os.path.join(keras_home, 'models', os.path.basename(weights))), 'cached as Keras does'
    assert sorted(os.listdir(data_dir)) == ['vgg']
    with tf.Graph().as_default(), tf.Session() as sess:
        image_input, keep_prob, layer3, layer4, layer7 = main.load_vgg(sess, vgg_path)
        pool3, pool4, fc7 = sess.run([layer3, layer4, layer7], {image_input: images, keep_prob: 1.0})
    assert _relative_error(pool3, expected['block3_pool']) < 1e-4
    assert _relative_error(pool4, expected['block4_pool']) < 1e-4
    # fc6 is a 7x7 SAME convolution: at the centre of pool5's 7x7 it sees exactly what Keras' fc1 sees.
    assert fc7.shape == (1, 7, 7, 4096) and np.abs(expected['fc2']).max() > 0
    assert _relative_error(fc7[:, 3, 3, :], expected['fc2']) < 1e-4


def test_ensure_vgg_names_both_addresses_when_offline():
    data_dir = scratch_dir('no-vgg')
    udacity, keras = closed_port_url('vgg.zip'), closed_port_url('vgg16_weights.h5')
    expect_error(errors.DownloadError, downloads.ensure_vgg, data_dir, 'udacity', udacity_url=udacity,
                 keras_url=keras, contains=(udacity, keras, 'by hand', '--vgg-source keras'))
    expect_error(ValueError, downloads.ensure_vgg, data_dir, 'torch', contains=('udacity', 'keras'))
    assert os.listdir(data_dir) == []


# --------------------------------------------------------------------------- downloads

def test_maybe_download_pretrained_vgg_downloads_unpacks_and_reuses():
    served = scratch_dir('served')
    zip_folder(small_vgg(), os.path.join(served, 'vgg.zip'), 'vgg')
    data_dir = scratch_dir('data')
    with LocalServer(served) as server:
        vgg_path = helper.maybe_download_pretrained_vgg(data_dir, server.url('vgg.zip'))
    assert vgg_path == os.path.join(data_dir, 'vgg') and downloads.vgg_is_complete(vgg_path)
    assert sorted(os.listdir(data_dir)) == ['vgg'], 'no archive or temporary folder is left behind'
    with tf.Graph().as_default(), tf.Session() as sess:
        main.load_vgg(sess, vgg_path)
    stamp = os.path.getmtime(os.path.join(vgg_path, 'saved_model.pb'))
    assert helper.maybe_download_pretrained_vgg(data_dir) == vgg_path  # present: no network needed
    assert os.path.getmtime(os.path.join(vgg_path, 'saved_model.pb')) == stamp


def test_maybe_download_pretrained_vgg_offline_and_incomplete():
    data_dir = scratch_dir('offline')
    url = closed_port_url('vgg.zip')
    expect_error(errors.DownloadError, helper.maybe_download_pretrained_vgg, data_dir, url,
                 contains=(url, 'by hand', os.path.join(data_dir, 'vgg', 'saved_model.pb')))
    assert os.listdir(data_dir) == [], 'a failed download leaves nothing behind'
    os.makedirs(os.path.join(data_dir, 'vgg'))
    expect_error(errors.DatasetError, helper.maybe_download_pretrained_vgg, data_dir,
                 contains=('incomplete', 'saved_model.pb'))


def test_maybe_download_kitti():
    data_dir = scratch_dir('kitti-missing')
    message = expect_error(errors.DatasetError, downloads.maybe_download_kitti, data_dir,
                           contains=(datasets.KITTI_PAGE, datasets.KITTI_ARCHIVE, '--kitti-url', 'main.py demo'))
    assert os.path.join(data_dir, 'data_road', 'training', 'image_2') in message
    served = scratch_dir('served-kitti')
    zip_folder(small_dataset(), os.path.join(served, 'data_road.zip'), 'data_road')
    with LocalServer(served) as server:
        data_road = downloads.maybe_download_kitti(data_dir, server.url('data_road.zip'))
        bad = expect_error(errors.DownloadError, downloads.maybe_download_kitti, scratch_dir('k'),
                           server.url('absent.zip'), contains=('absent.zip', datasets.KITTI_PAGE))
    assert '404' in bad
    assert len(datasets.kitti_road_pairs(os.path.join(data_road, 'training'))) == 12
    assert sorted(os.listdir(data_dir)) == ['data_road']


# --------------------------------------------------------------------------- images and batches

def test_read_rgb_accepts_grey_and_rgba_and_names_a_corrupt_file():
    folder = scratch_dir('read')
    grey = write_png(os.path.join(folder, 'grey.png'), np.arange(12).reshape(3, 4) * 20)
    rgba = write_png(os.path.join(folder, 'rgba.png'), np.full((3, 4, 4), 7))
    assert images.read_rgb(grey).shape == (3, 4, 3) and images.read_rgb(grey)[1, 2, 0] == 120
    assert images.read_rgb(rgba).shape == (3, 4, 3)
    corrupt = os.path.join(folder, 'corrupt.png')
    with open(corrupt, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n not really a png')
    expect_error(errors.DatasetError, images.read_rgb, corrupt, contains=(corrupt,))


def test_resize_bilinear_matches_tensorflow_and_nearest_keeps_values():
    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3)).astype(np.uint8)
    for shape in [(16, 24), (80, 100), (37, 20)]:
        expected = tf.compat.v2.image.resize(image[None].astype(np.float32), shape, 'bilinear')
        with tf.Session() as sess:
            expected = sess.run(expected)[0]
        assert np.abs(images.resize_bilinear(image, shape) - expected).max() < 1e-2, shape
    label = kitti_label(37, 53, slice(20, 30))
    resized = images.resize_nearest(label, (74, 24))
    colours = {tuple(c) for c in resized.reshape(-1, 3)}
    assert colours <= {datasets.ROAD_COLOR, datasets.NOT_ROAD_COLOR, (0, 0, 0)} and len(colours) == 3


def test_kitti_label_to_onehot():
    label = kitti_label(4, 3, slice(0, 2))
    label[2, 0] = (0, 0, 255)  # not a KITTI colour, red channel 0: don't care
    label[2, 1] = (200, 10, 10)  # an odd colour with red: not road
    onehot = datasets.kitti_label_to_onehot(label)
    assert onehot.shape == (4, 3, 2) and onehot.dtype == bool
    assert onehot[:2, :, 1].all() and not onehot[:2, :, 0].any()
    assert not onehot[3].any() and not onehot[2, 0].any(), "don't-care rows are all zero"
    assert onehot[2, 1].tolist() == [True, False] and onehot[2, 2].tolist() == [True, False]


def _kitti_folder(names_with_labels, names_without_labels=(), orphan_labels=(), size=(20, 30)):
    folder = scratch_dir('training')
    for name in list(names_with_labels) + list(names_without_labels):
        write_png(os.path.join(folder, 'image_2', name + '.png'), np.full(size + (3,), 100))
    for name in list(names_with_labels) + list(orphan_labels):
        category, index = name.split('_')
        write_png(os.path.join(folder, 'gt_image_2', '%s_road_%s.png' % (category, index)),
                  kitti_label(size[0], size[1], slice(10, 20)))
        write_png(os.path.join(folder, 'gt_image_2', '%s_lane_%s.png' % (category, index)),
                  kitti_label(size[0], size[1], slice(0, 5)))
    return folder


def test_gen_batch_function_yields_resized_one_hot_batches():
    folder = _kitti_folder(['um_000000', 'um_000001', 'umm_000000', 'uu_000000', 'uu_000001'])
    get_batches_fn = helper.gen_batch_function(folder, (32, 64))
    batches = list(get_batches_fn(2))
    assert [len(images) for images, _ in batches] == [2, 2, 1]
    images, labels = batches[0]
    assert images.shape == (2, 32, 64, 3) and images.dtype == np.uint8 and (images == 100).all()
    assert labels.shape == (2, 32, 64, 2) and labels.dtype == bool
    assert labels[0, 16:30, :, 1].all() and labels[0, 2:14, :, 0].all()
    assert not labels[0, -1].any(), 'the bottom row is don\'t-care'
    first_epoch = [labels.sum() for _, labels in batches]
    assert sum(first_epoch) == sum(labels.sum() for _, labels in get_batches_fn(3)), 'every image once per epoch'


def test_gen_batch_function_on_a_generated_dataset():
    get_batches_fn = helper.gen_batch_function(os.path.join(small_dataset(), 'training'), SMALL_SHAPE)
    seen = 0
    for images, labels in get_batches_fn(5):
        seen += len(images)
        road = labels[..., 1].mean()
        assert 0.05 < road < 0.6, road
        assert labels.any(axis=-1).mean() > 0.9
    assert seen == get_batches_fn.num_images == 12


def test_gen_batch_function_explains_bad_datasets():
    missing_label = _kitti_folder(['um_000000'], names_without_labels=['um_000001'])
    expect_error(errors.DatasetError, helper.gen_batch_function, missing_label, (32, 64),
                 contains=('um_000001.png', 'um_road_000001.png', 'no label'))
    orphan = _kitti_folder(['um_000000'], orphan_labels=['uu_000004'])
    expect_error(errors.DatasetError, helper.gen_batch_function, orphan, (32, 64),
                 contains=('uu_road_000004.png', 'no image'))
    empty = scratch_dir('empty')
    os.makedirs(os.path.join(empty, 'image_2'))
    os.makedirs(os.path.join(empty, 'gt_image_2'))
    expect_error(errors.DatasetError, helper.gen_batch_function, empty, (32, 64), contains=('no training images',))
    expect_error(errors.DatasetError, helper.gen_batch_function, os.path.join(empty, 'nowhere'), (32, 64),
                 contains=('image_2', 'does not exist', datasets.KITTI_PAGE))
    corrupt = _kitti_folder(['um_000000', 'um_000001'])
    bad_png = os.path.join(corrupt, 'image_2', 'um_000001.png')
    with open(bad_png, 'wb') as f:
        f.write(b'garbage')
    expect_error(errors.DatasetError, helper.gen_batch_function, corrupt, (32, 64), contains=(bad_png,))
    mismatched = _kitti_folder(['um_000000'])
    write_png(os.path.join(mismatched, 'image_2', 'um_000000.png'), np.zeros((21, 30, 3)))
    expect_error(errors.DatasetError, helper.gen_batch_function, mismatched, (32, 64),
                 contains=('um_road_000000.png', '30x20', '30x21'))


def test_split_pairs_is_deterministic_stratified_and_disjoint():
    pairs = [('%s_%06d.png' % (c, i), 'label') for c, n in (('um', 12), ('umm', 18), ('uu', 6)) for i in range(n)]
    train, held_out = datasets.split_pairs(pairs, 1 / 6)
    assert (train, held_out) == datasets.split_pairs(list(reversed(pairs)), 1 / 6)
    assert sorted(train + held_out) == sorted(pairs) and not set(train) & set(held_out)
    counts = {c: sum(road_metrics.kitti_category(p) == c for p, _ in held_out) for c in ('um', 'umm', 'uu')}
    assert counts == {'um': 2, 'umm': 3, 'uu': 1}, counts


# --------------------------------------------------------------------------- input pipeline and speed options

def test_batches_are_reproducible_per_epoch_and_resume_where_they_left_off():
    folder = os.path.join(small_dataset(), 'training')
    first = helper.gen_batch_function(folder, SMALL_SHAPE, seed=5)
    epochs = [[images.copy() for images, _ in first(4)] for _ in range(3)]
    again = helper.gen_batch_function(folder, SMALL_SHAPE, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(epochs[0], [images for images, _ in again(4)]))
    resumed = helper.gen_batch_function(folder, SMALL_SHAPE, seed=5, first_epoch=2)
    assert all(np.array_equal(a, b) for a, b in zip(epochs[2], [images for images, _ in resumed(4)]))
    assert not all(np.array_equal(a, b) for a, b in zip(epochs[0], epochs[1])), 'reshuffled every epoch'


def test_augment_batch_moves_images_and_labels_together():
    rng = np.random.default_rng(0)
    images = np.zeros((16, 32, 48, 3), np.uint8)
    images[:, :, :20] = 200  # a bright road on the left
    labels = np.zeros((16, 32, 48, 2), bool)
    labels[:, :, :20, 1] = True
    labels[:, :, 20:, 0] = True
    labels[:, 0, :, :] = False  # a don't-care row
    augmented, augmented_labels = batches.augment_batch(rng, images, labels)
    assert augmented.shape == images.shape and augmented.dtype == np.uint8 and augmented_labels.dtype == bool
    assert augmented_labels.sum(axis=-1).max() == 1, "still one-hot (or don't care)"
    flipped = 0
    for image, label in zip(augmented, augmented_labels):
        road, rest = image[label[..., 1]].mean(), image[label[..., 0]].mean()
        assert road > rest + 50, 'the road pixels are still the bright ones'
        flipped += label[5, -1, 1]
    assert 0 < flipped < 16, 'some images flipped, some not'
    assert not np.array_equal(augmented.mean(axis=(1, 2, 3)), images.mean(axis=(1, 2, 3)))


def test_prefetch_keeps_order_and_raises_the_producers_error():
    assert list(batches.prefetch(iter(range(10)))) == list(range(10))

    def failing():
        yield 1
        raise OSError('disk gone')

    expect_error(OSError, lambda: list(batches.prefetch(failing())), contains=('disk gone',))


def _one_training_step(sess, model):
    images, labels = next(helper.gen_batch_function(os.path.join(small_dataset(), 'training'), SMALL_SHAPE)(2))
    _, loss = sess.run([model.train_op, model.loss], {model.image_input: images, model.correct_label: labels,
                                                      model.learning_rate: 1e-3})
    return loss


def test_freeze_encoder_trains_only_the_decoder():
    with tf.Graph().as_default(), tf.Session() as sess:
        model = model.build_fcn8(sess, small_vgg(), 2, freeze_encoder=True)
        encoder = [v for v in tf.trainable_variables() if v.name.startswith('block')]
        decoder = [v for v in tf.trainable_variables() if v.name.startswith('fcn8')]
        before = sess.run(encoder + decoder)
        assert np.isfinite(_one_training_step(sess, model))
        after = sess.run(encoder + decoder)
    assert all(np.array_equal(a, b) for a, b in zip(before[:len(encoder)], after[:len(encoder)]))
    assert not all(np.array_equal(a, b) for a, b in zip(before[len(encoder):], after[len(encoder):]))


def test_xla_and_mixed_precision_build_and_train_a_step_on_a_cpu():
    with tf.Graph().as_default(), tf.Session(config=training.session_config(xla=True, mixed_precision=True)) as sess:
        model = model.build_fcn8(sess, small_vgg(), 2, mixed_precision=True)
        first = _one_training_step(sess, model)
        assert np.isfinite(first) and np.isfinite(_one_training_step(sess, model))
        variables = [v for v in tf.global_variables() if v.name.startswith('fcn8')]
        assert variables and all(v.dtype.base_dtype == tf.float32 for v in variables), 'float32 master weights'


# --------------------------------------------------------------------------- inference and outputs

def test_road_overlay_paints_only_road():
    image = np.full((2, 3, 3), 100, np.uint8)
    probability = np.array([[0.9, 0.5, 0.1], [0.51, 0.0, 1.0]])
    overlay = images.road_overlay(image, probability)
    green = np.rint(0.5 * 100 + 0.5 * np.array(images.OVERLAY_COLOR)).astype(np.uint8)
    road = probability > 0.5
    assert (overlay[road] == green).all() and (overlay[~road] == 100).all()


def _write_test_images(data_dir, sizes):
    for i, (height, width) in enumerate(sizes):
        image = np.random.default_rng(i).integers(0, 256, (height, width, 3))
        write_png(os.path.join(data_dir, 'data_road', 'testing', 'image_2', 'uu_%06d.png' % i), image)


def test_save_inference_samples_writes_overlays_at_original_sizes():
    data_dir = scratch_dir('infer')
    sizes = [(70, 190), (72, 191), (70, 190), (75, 200), (64, 192)]
    _write_test_images(data_dir, sizes)
    runs_dir = os.path.join(scratch_dir('runs'), 'runs')
    with tf.Graph().as_default(), tf.Session() as sess:
        model = _small_fcn8(sess)
        output_dir = helper.save_inference_samples(runs_dir, data_dir, sess, SMALL_SHAPE, model.logits,
                                                   model.keep_prob, model.image_input)
    assert os.path.dirname(output_dir) == runs_dir
    written = sorted(os.listdir(output_dir))
    assert written == ['uu_%06d.png' % i for i in range(len(sizes))], written
    for name, size in zip(written, sizes):
        overlay = iio.imread(os.path.join(output_dir, name))
        original = iio.imread(os.path.join(data_dir, 'data_road', 'testing', 'image_2', name))
        assert overlay.shape == size + (3,)
        changed = (overlay != original).any(axis=-1)
        assert (overlay[changed][:, 1] >= original[changed][:, 1]).all(), 'only green is added'


def test_gen_test_output_builds_the_softmax_once():
    data_dir = scratch_dir('once')
    _write_test_images(data_dir, [(64, 192)] * 3 + [(66, 190)] * 2)
    with tf.Graph().as_default(), tf.Session() as sess:
        model = _small_fcn8(sess)
        before = len(sess.graph.get_operations())
        outputs = list(helper.gen_test_output(sess, model.logits, model.keep_prob, model.image_input,
                                              os.path.join(data_dir, 'data_road', 'testing'), SMALL_SHAPE,
                                              batch_size=2))
        added = len(sess.graph.get_operations()) - before
        assert len(outputs) == 5 and added < 30, added


def test_new_run_dir_never_reuses_a_folder():
    runs_dir = scratch_dir('runs')
    first, second = main.new_run_dir(runs_dir), main.new_run_dir(runs_dir)
    assert first != second and os.path.isdir(first) and os.path.isdir(second)


def test_evaluate_scores_perfect_and_inverted_predictions():
    """A network forced to output the label (or its opposite) scores IoU 1 (or 0)."""
    data_road = small_dataset()
    pairs = datasets.kitti_road_pairs(os.path.join(data_road, 'training'))[:3]
    size = images.read_rgb(pairs[0][0]).shape[:2]
    labels = np.stack([datasets.kitti_label_to_onehot(images.resize_nearest(images.read_rgb(label), size))
                       for _, label in pairs]).astype(np.float32)
    for sign, expected_iou in ((1, 1.0), (-1, 0.0)):
        with tf.Graph().as_default(), tf.Session() as sess:
            image_input = tf.placeholder(tf.float32, [None, None, None, 3])
            keep_prob = tf.placeholder_with_default(1.0, [])
            logits = tf.constant(sign * 20.0 * (labels - 0.5))
            predict = inference.SessionPredictor(sess, logits, keep_prob, image_input, size)
            metrics, class_iou = evaluation.evaluate(predict, pairs, batch_size=3)
        assert class_iou is None
        assert abs(metrics.result()['iou'] - expected_iou) < 1e-6, metrics.result()


# --------------------------------------------------------------------------- command line and end to end

def test_command_line_rejects_bad_flags():
    expect_error(SystemExit, main.parse_args, ['--image-shape', '100', '576'], contains=('multiples of 8',))
    expect_error(SystemExit, main.parse_args, ['demo', '--keep-prob', '0'], contains=('--keep-prob',))
    args = main.parse_args(['--epochs', '3'])
    assert args.command == 'train' and args.epochs == 3 and args.image_shape == (160, 576)
    assert main.parse_args([]).command == 'train'


def test_train_explains_missing_kitti():
    data_dir = scratch_dir('nokitti')
    expect_error(SystemExit, main.run, ['train', '--data-dir', data_dir], contains=(datasets.KITTI_PAGE, 'demo'))


def test_demo_end_to_end_writes_a_run_folder():
    data_dir, runs_dir = scratch_dir('demo-data'), scratch_dir('demo-runs')
    main.run(['demo', '--data-dir', data_dir, '--runs-dir', runs_dir, '--epochs', '2', '--image-shape', '32', '96'])
    (run_dir,) = glob.glob(os.path.join(runs_dir, '*'))
    overlays = sorted(glob.glob(os.path.join(run_dir, '*.png')))
    tests = sorted(glob.glob(os.path.join(data_dir, 'demo', 'data_road', 'testing', 'image_2', '*.png')))
    assert [os.path.basename(p) for p in overlays] == [os.path.basename(p) for p in tests]
    for overlay, test in zip(overlays, tests):
        assert iio.imread(overlay).shape == iio.imread(test).shape
    run = run_folder.RunFolder(run_dir)
    assert run.checkpoint_state('last')['epoch'] == 2 and run.checkpoint_state('best')['epoch'] in (1, 2)
    rows = run.read_metrics()
    assert [row['epoch'] for row in rows] == ['1', '2'] and all(0 <= float(row['maxf']) <= 1 for row in rows)
    assert glob.glob(os.path.join(run_dir, 'tensorboard', 'events.out.tfevents.*'))
    config = run.read_config()
    assert len(config['val']) == main.DEMO_HELD_OUT - 1 and not {tuple(p) for p in config['val']} & {
        tuple(p) for p in config['train']}
    exported = inference.ExportedModel(os.path.join(run_dir, 'export'))
    try:
        image = iio.imread(tests[0])
        probabilities = exported([image])
        assert probabilities.shape == (1,) + image.shape[:2] + (2,)
        assert np.allclose(probabilities.sum(axis=-1), 1, atol=1e-3) and exported.road_class == 1
    finally:
        exported.close()


# --------------------------------------------------------------------------- runs that survive

def _train_command(runs_dir, epochs, *extra):
    return [sys.executable, os.path.join(HERE, 'main.py'), 'train', '--data-dir', os.path.dirname(small_dataset()),
            '--vgg-dir', small_vgg(), '--runs-dir', runs_dir, '--epochs', str(epochs), '--image-shape', '64', '192',
            '--batch-size', '1', '--val-fraction', '0.25', '--keep-prob', '1', '--learning-rate', '1e-3'] + list(extra)


def _wait_for_epoch(run, epoch, process, timeout=240):
    """Poll until checkpoints/last holds `epoch` (or later); fails if the process ends first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = run.checkpoint_state('last')
        if state and state['epoch'] >= epoch:
            return state['epoch']
        assert process.poll() is None, 'training ended early:\n' + process.communicate()[1][-3000:]
        time.sleep(0.05)
    raise AssertionError('no checkpoint of epoch %d within %ds' % (epoch, timeout))


def _only_run(runs_dir):
    (path,) = glob.glob(os.path.join(runs_dir, '2*'))
    return run_folder.RunFolder(path)


def test_killed_training_resumes_with_its_split_epochs_and_optimizer_state():
    runs_dir = scratch_dir('kill')
    process = subprocess.Popen(_train_command(runs_dir, 6), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        run = None
        while run is None:
            assert process.poll() is None, process.communicate()[1][-3000:]
            run = _only_run(runs_dir) if glob.glob(os.path.join(runs_dir, '2*')) else None
            time.sleep(0.05)
        _wait_for_epoch(run, 2, process)
        time.sleep(0.3)  # into the next epoch
        process.kill()
    finally:
        process.wait()
    killed_at = run.checkpoint_state('last')['epoch']
    assert 2 <= killed_at < 6, killed_at
    config_before = run.read_config()
    names = dict(tf.train.list_variables(run.checkpoint_prefix('last')))
    assert any('Adam' in name for name in names), 'the optimizer state is in the checkpoint'
    finished = subprocess.run([sys.executable, os.path.join(HERE, 'main.py'), 'train', '--resume', run.path],
                              capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert 'Resuming %s after epoch %d of 6' % (run.path, killed_at) in finished.stdout
    assert run.read_config()['val'] == config_before['val'], 'same split'
    assert run.checkpoint_state('last')['epoch'] == 6
    assert [int(row['epoch']) for row in run.read_metrics()] == [1, 2, 3, 4, 5, 6]
    assert not [name for name in os.listdir(os.path.join(run.path, 'checkpoints')) if name.startswith('.')]
    with tf.Graph().as_default(), tf.Session() as sess:
        model = _small_fcn8(sess)
        tf.train.Saver(tf.global_variables()).restore(sess, run.checkpoint_prefix('best'))
        assert np.isfinite(sess.run(model.output, {model.image_input: np.zeros((1, 64, 192, 3))})).all()


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly():
    runs_dir = scratch_dir('sigint')
    process = subprocess.Popen(_train_command(runs_dir, 50), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        while not glob.glob(os.path.join(runs_dir, '2*')):
            assert process.poll() is None, process.communicate()[1][-3000:]
            time.sleep(0.05)
        run = _only_run(runs_dir)
        _wait_for_epoch(run, 1, process)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1 and 'Interrupted: saved' in stderr and '--resume' in stderr, stderr[-2000:]
    assert 'Traceback' not in stderr, stderr[-4000:]
    assert run.checkpoint_state('last')['epoch'] >= 1


def test_resume_discards_what_killed_saves_left_and_keeps_complete_checkpoints():
    run = run_folder.RunFolder(scratch_dir('killed-saves'))
    with tf.Graph().as_default(), tf.Session() as sess:
        weight = tf.Variable(7.0, name='weight')
        sess.run(weight.initializer)
        saver = tf.train.Saver([weight])
        run.save_checkpoint(sess, saver, 'last', {'epoch': 2, 'best_maxf': 0.5})
        run.save_checkpoint(sess, saver, 'best', {'epoch': 1, 'best_maxf': 0.5})
    parent = os.path.join(run.path, 'checkpoints')
    # Killed while writing: a staging folder with part of a checkpoint. Killed between the two renames of
    # best: only its retired copy is left.
    os.makedirs(os.path.join(parent, '.last-killed'))
    with open(os.path.join(parent, '.last-killed', 'model.ckpt.index'), 'wb') as partial:
        partial.write(b'half')
    os.rename(run.checkpoint_dir('best'), os.path.join(parent, '.retired-best'))
    run.discard_unfinished_saves()
    assert sorted(os.listdir(parent)) == ['best', 'last']
    assert run.checkpoint_state('last')['epoch'] == 2 and run.checkpoint_state('best')['epoch'] == 1
    assert dict(tf.train.list_variables(run.checkpoint_prefix('best'))) == {'weight': []}


def test_a_non_finite_loss_keeps_the_last_good_checkpoint():
    run = run_folder.RunFolder(scratch_dir('nan'))
    pairs = datasets.kitti_road_pairs(os.path.join(small_dataset(), 'training'))
    args = main.parse_args(['train', '--epochs', '1', '--image-shape', '32', '96', '--learning-rate', '1e-3',
                            '--keep-prob', '1'])
    config = main.new_run_config(args, 'kitti', small_dataset(), small_vgg(), pairs[:6], pairs[6:8],
                                 datasets.kitti_test_images(small_dataset()))
    run.write_config(config)
    sess, _ = training.fit(run, config)
    sess.close()
    good = dict(tf.train.list_variables(run.checkpoint_prefix('last')))
    config.update(epochs=3, learning_rate=1e30)
    message = expect_error(FloatingPointError, training.fit, run, config, resume=True,
                           contains=('last good checkpoint (epoch 1)', '--resume'))
    assert run.checkpoint_dir('last') in message
    assert run.checkpoint_state('last')['epoch'] == 1
    assert dict(tf.train.list_variables(run.checkpoint_prefix('last'))) == good


# --------------------------------------------------------------------------- exported models, evaluate, infer

@functools.lru_cache(maxsize=None)
def small_trained_run():
    """A run folder trained for one epoch on the generated dataset, with export/ and overlays."""
    run = run_folder.RunFolder(scratch_dir('trained'))
    pairs = datasets.kitti_road_pairs(os.path.join(small_dataset(), 'training'))
    args = main.parse_args(['train', '--epochs', '1', '--image-shape', '64', '192', '--learning-rate', '1e-3',
                            '--keep-prob', '1'])
    config = main.new_run_config(args, 'kitti', small_dataset(), small_vgg(), pairs[:9], pairs[9:],
                                 datasets.kitti_test_images(small_dataset()))
    run.write_config(config)
    sess, model = training.fit(run, config)
    training.finish_run(sess, model, run, config)
    sess.close()
    return run


def test_exported_model_matches_the_trained_graph_at_any_size():
    run = small_trained_run()
    images = [images.read_rgb(p) for p in sorted(glob.glob(os.path.join(small_dataset(), 'testing', 'image_2',
                                                                         '*.png')))[:2]]
    exported = inference.ExportedModel(os.path.join(run.path, 'export'))
    try:
        exported_probabilities = [exported([image])[0] for image in images]
    finally:
        exported.close()
    with tf.Graph().as_default(), tf.Session() as sess:
        model = _small_fcn8(sess)
        tf.train.Saver(tf.global_variables()).restore(sess, run.checkpoint_prefix('best'))
        predict = inference.SessionPredictor(sess, model.logits, model.keep_prob, model.image_input, (64, 192))
        for image, probability in zip(images, exported_probabilities):
            assert probability.shape == image.shape[:2] + (2,)
            assert np.abs(predict([image])[0] - probability).max() < 0.02


def _run_main(argv):
    """main.run(argv): (stdout text, SystemExit code or None)."""
    out = io.StringIO()
    code = None
    with contextlib.redirect_stdout(out):
        try:
            main.run(argv)
        except SystemExit as exit_:
            code = exit_.code
    return out.getvalue(), code


def test_evaluate_command_prints_the_kitti_metrics_and_json():
    run = small_trained_run()
    text, code = _run_main(['evaluate', '--model', run.path, '--data-dir', os.path.dirname(small_dataset()),
                            '--json'])
    assert code is None, text
    figures = json.loads(text.strip().splitlines()[-1])
    assert set(figures) == set(main.EVALUATE_JSON_KEYS) and figures['images'] == 12
    assert all(0 <= figures[key] <= 1 for key in ('iou', 'maxf', 'ap', 'precision', 'recall'))
    assert 'MaxF' in text and 'umm' in text
    pairs = datasets.kitti_road_pairs(os.path.join(small_dataset(), 'training'))
    assert figures['maxf'] == main.evaluate_model(os.path.join(run.path, 'export'), pairs)[0].result()['maxf']
    _, code = _run_main(['evaluate', '--model', scratch_dir('empty'), '--data-dir',
                         os.path.dirname(small_dataset())])
    assert 'no exported model' in str(code)


def test_infer_command_writes_overlays_and_masks_and_reports_bad_inputs():
    run = small_trained_run()
    inputs = scratch_dir('infer-in')
    write_png(os.path.join(inputs, 'a.png'), np.full((50, 70, 3), 90))
    write_png(os.path.join(inputs, 'b.png'), np.full((66, 120, 3), 150))
    iio.imwrite(os.path.join(inputs, 'c.jpg'), np.full((40, 60, 3), 200, np.uint8))
    with open(os.path.join(inputs, 'broken.png'), 'wb') as f:
        f.write(b'not an image')
    out = os.path.join(scratch_dir('infer-out'), 'out')
    text, code = _run_main(['infer', '--model', run.path, inputs, '--out', out, '--masks'])
    assert code == 1 and '3 overlays' in text and '1 unreadable' in text, (text, code)
    assert sorted(os.listdir(out)) == ['a.png', 'a_road.png', 'b.png', 'b_road.png', 'c.png', 'c_road.png']
    assert iio.imread(os.path.join(out, 'b.png')).shape == (66, 120, 3)
    assert iio.imread(os.path.join(out, 'b_road.png')).shape == (66, 120)
    text, code = _run_main(['infer', '--model', run.path, os.path.join(inputs, 'a*.png'), '--out', out])
    assert code is None and '1 overlays' in text
    _, code = _run_main(['infer', '--model', run.path, os.path.join(inputs, 'nothing*.png')])
    assert 'no images found' in str(code)


def _environment_without_frozen_weights():
    return {key: value for key, value in os.environ.items() if key != process_tuning.FROZEN_WEIGHTS_SWITCH}


def test_infer_in_its_own_process_caches_kernels_and_predicts_as_without():
    # python main.py infer switches on oneDNN's kernel caching (TF reads it once per process): its masks must
    # equal those of an ExportedModel in this process, which trains too and so never caches.
    run = small_trained_run()
    inputs, out = scratch_dir('cached-in'), scratch_dir('cached-out')
    scene = sorted(glob.glob(os.path.join(small_dataset(), 'testing', 'image_2', '*.png')))[0]
    shutil.copy(scene, os.path.join(inputs, 'scene.png'))
    finished = subprocess.run([sys.executable, os.path.join(HERE, 'main.py'), 'infer', '--model', run.path, inputs,
                               '--out', out, '--masks'], capture_output=True, text=True, timeout=300,
                              env=_environment_without_frozen_weights())
    assert finished.returncode == 0 and '1 overlays' in finished.stdout, finished.stderr[-2000:]
    exported = inference.ExportedModel(os.path.join(run.path, 'export'))
    try:
        road = exported([images.read_rgb(os.path.join(inputs, 'scene.png'))])[0][..., exported.road_class]
    finally:
        exported.close()
    mask = iio.imread(os.path.join(out, 'scene_road.png')).astype(int)
    assert mask.shape == road.shape and np.abs(mask - np.rint(road * 255)).max() <= 1


MALLOC_PHASES_SCRIPT = """
import ctypes, ctypes.util, json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import main
from tfv1 import tf

libc = ctypes.CDLL(ctypes.util.find_library('c'))
class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ('arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks',
                                                     'fsmblks', 'uordblks', 'fordblks', 'keepcost')]
libc.mallinfo2.restype = Mallinfo2

def big_block_is_mmapped():
    before = libc.mallinfo2().hblks
    block = np.ones(16 * 2 ** 20)  # 128 MB, far above glibc's mmap threshold
    return libc.mallinfo2().hblks > before

tuned = process_tuning.tune_malloc()
mmapped_before = big_block_is_mmapped()
x = tf.Variable(3.0)
loss = tf.square(x)
train_op = tf.train.GradientDescentOptimizer(0.1).minimize(loss)
image, label, keep_prob, learning_rate = (tf.placeholder(tf.float32) for _ in range(4))
with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    main.train_nn(sess, 1, 1, lambda batch_size: iter([([0.0], [0.0])]), train_op, loss, image, label,
                  keep_prob, learning_rate)
print(json.dumps([tuned, mmapped_before, big_block_is_mmapped()]))
"""


def test_malloc_tuning_keeps_big_blocks_in_the_heap_after_the_first_training_step():
    finished = subprocess.run([sys.executable, '-c', MALLOC_PHASES_SCRIPT, HERE], capture_output=True, text=True,
                              timeout=120, env=_environment_without_frozen_weights())
    assert finished.returncode == 0, finished.stderr[-2000:]
    tuned, mmapped_before, mmapped_after = json.loads(finished.stdout.strip().splitlines()[-1])
    if not tuned:
        raise unittest.SkipTest('not glibc: tune_malloc does nothing here')
    # Phase 1 leaves big blocks to mmap (TensorFlow's pools grow there); train_nn's first step ends that.
    assert mmapped_before and not mmapped_after


def test_training_refuses_a_process_that_assumes_frozen_weights():
    # In this process: train_nn checks before its first step.
    os.environ[process_tuning.FROZEN_WEIGHTS_SWITCH] = '1'
    try:
        expect_error(errors.ProcessSettingError, main.train_nn, None, 1, 1, None, None, None, None, None, None, None,
                     contains=(process_tuning.FROZEN_WEIGHTS_SWITCH, 'Unset it'))
    finally:
        del os.environ[process_tuning.FROZEN_WEIGHTS_SWITCH]
    # As a program: main.py stops before loading anything, with the reason.
    environment = dict(_environment_without_frozen_weights(), **{process_tuning.FROZEN_WEIGHTS_SWITCH: 'true'})
    finished = subprocess.run([sys.executable, os.path.join(HERE, 'main.py'), 'demo', '--data-dir',
                               scratch_dir('frozen-demo')], capture_output=True, text=True, timeout=120,
                              env=environment)
    assert finished.returncode != 0 and process_tuning.FROZEN_WEIGHTS_SWITCH in finished.stderr, finished.stderr[-2000:]
    assert os.listdir(scratch_dir('frozen-demo')) == []


# --------------------------------------------------------------------------- CamVid

SHARED_CAMVID = os.path.join(HERE, '..', 'shared', 'data', 'camvid')


def _camvid_folder(sizes=(20, 30)):
    """A tiny CamVid-layout folder: 3 train and 2 val pairs with class ids 3 (road), 1 and 11 (unlabelled)."""
    root = scratch_dir('camvid')
    for split, count in (('train', 3), ('val', 2)):
        for i in range(count):
            ids = np.full(sizes, 1, np.uint8)
            ids[sizes[0] // 2:] = datasets.CAMVID_ROAD
            ids[0] = datasets.CAMVID_UNLABELLED
            write_png(os.path.join(root, split, 'f%03d.png' % i), np.full(sizes + (3,), 60 + 40 * i))
            write_png(os.path.join(root, split + 'annot', 'f%03d.png' % i), ids)
    return root


def test_camvid_layout_is_detected_paired_and_decoded():
    root = _camvid_folder()
    assert datasets.is_camvid(root) and not datasets.is_camvid(os.path.dirname(small_dataset()))
    pairs = datasets.camvid_pairs(root, 'train')
    assert [os.path.basename(image) for image, _ in pairs] == ['f000.png', 'f001.png', 'f002.png']
    onehot = datasets.camvid_label_to_onehot(images.read_rgb(pairs[0][1]))
    assert onehot[10:, :, 1].all() and onehot[1:10, :, 0].all() and not onehot[0].any()
    get_batches_fn = helper.gen_batch_function(root, (16, 24), pairs=pairs,
                                               label_to_onehot=datasets.camvid_label_to_onehot)
    images, labels = next(get_batches_fn(3))
    assert images.shape == (3, 16, 24, 3) and labels.shape == (3, 16, 24, 2) and labels[:, -1, :, 1].all()
    os.remove(os.path.join(root, 'valannot', 'f001.png'))
    expect_error(errors.DatasetError, datasets.camvid_pairs, root, 'val', contains=('f001.png', 'no label'))
    expect_error(errors.DatasetError, datasets.camvid_pairs, root, 'test', contains=(os.path.join(root, 'test') + ' does not exist', 'SegNet'))


def test_training_on_a_camvid_folder_uses_its_val_split():
    root = _camvid_folder((32, 48))
    runs_dir = scratch_dir('camvid-runs')
    main.run(['train', '--data-dir', root, '--vgg-dir', small_vgg(), '--runs-dir', runs_dir, '--epochs', '1',
              '--image-shape', '32', '48', '--batch-size', '3'])
    run = _only_run(runs_dir)
    config = run.read_config()
    assert config['dataset'] == 'camvid' and len(config['train']) == 3 and len(config['val']) == 2
    assert sorted(name for name in os.listdir(run.path) if name.endswith('.png')) == ['f000.png', 'f001.png']
    text, code = _run_main(['evaluate', '--model', run.path, '--data-dir', root, '--json'])
    assert code is None and json.loads(text.strip().splitlines()[-1])['images'] == 2


def test_camvid_with_all_classes_trains_scores_every_class_and_paints_the_palette():
    root = _camvid_folder((32, 48))
    runs_dir = scratch_dir('camvid-all')
    main.run(['train', '--data-dir', root, '--vgg-dir', small_vgg(), '--runs-dir', runs_dir, '--epochs', '1',
              '--image-shape', '32', '48', '--batch-size', '3', '--classes', 'all'])
    run = _only_run(runs_dir)
    assert 'miou' in run.read_metrics()[0]
    overlay = iio.imread(os.path.join(run.path, 'f000.png')).astype(int)
    image = images.read_rgb(os.path.join(root, 'val', 'f000.png')).astype(int)
    blends = {tuple(np.rint(0.5 * image[0, 0] + 0.5 * np.array(c)).astype(int)) for c in datasets.CAMVID_PALETTE}
    assert {tuple(pixel) for pixel in overlay.reshape(-1, 3)} <= blends, 'every pixel blended with a class colour'
    text, code = _run_main(['evaluate', '--model', run.path, '--data-dir', root])
    assert code is None and 'IoU road' in text and 'mean class IoU' in text
    expect_error(SystemExit, main.run, ['train', '--data-dir', os.path.dirname(small_dataset()), '--classes', 'all',
                                        '--vgg-dir', small_vgg()], contains=('CamVid',))


def test_real_camvid_labels_decode_to_road_and_unlabelled():
    if not os.path.isdir(SHARED_CAMVID):
        raise unittest.SkipTest('CamVid is not at %s' % SHARED_CAMVID)
    pairs = datasets.camvid_pairs(SHARED_CAMVID, 'val')
    assert len(pairs) == 101 and len(datasets.camvid_pairs(SHARED_CAMVID, 'train')) == 367
    onehot = datasets.camvid_label_to_onehot(images.read_rgb(pairs[0][1]))
    assert onehot.shape == (360, 480, 2) and 0.1 < onehot[..., 1].mean() < 0.6


# --------------------------------------------------------------------------- real KITTI images (optional)

def _require_shared_kitti():
    if not os.path.isdir(SHARED_KITTI):
        raise unittest.SkipTest('the KITTI sample is not at %s' % SHARED_KITTI)


def test_real_kitti_sample_batches_and_overlays_at_every_size():
    _require_shared_kitti()
    get_batches_fn = helper.gen_batch_function(os.path.join(SHARED_KITTI, 'training'), SMALL_SHAPE)
    images, labels = next(get_batches_fn(2))
    assert images.shape == (2,) + SMALL_SHAPE + (3,) and 0.05 < labels[..., 1].mean() < 0.5
    runs_dir = scratch_dir('kitti-runs')
    with tf.Graph().as_default(), tf.Session() as sess:
        model = _small_fcn8(sess)
        output_dir = helper.save_inference_samples(runs_dir, os.path.dirname(SHARED_KITTI), sess, SMALL_SHAPE,
                                                   model.logits, model.keep_prob, model.image_input)
    tests = sorted(glob.glob(os.path.join(SHARED_KITTI, 'testing', 'image_2', '*.png')))
    sizes = set()
    for test in tests:
        overlay = iio.imread(os.path.join(output_dir, os.path.basename(test)))
        assert overlay.shape == iio.imread(test).shape
        sizes.add(overlay.shape)
    assert len(sizes) == 4, sizes


# --------------------------------------------------------------------------- runner

def collect_tests():
    """(name, function) of every test here and in tests/test_*.py."""
    modules = [sys.modules[__name__]]
    for path in sorted(glob.glob(os.path.join(HERE, 'tests', 'test_*.py'))):
        spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules.append(module)
    return [('%s.%s' % (module.__name__.replace('__main__', 'project_tests'), name), function)
            for module in modules for name, function in vars(module).items()
            if name.startswith('test_') and callable(function) and function.__module__ == module.__name__]


def run_tests(tests):
    passed, failed, skipped = [], [], []
    started = time.time()
    for name, function in tests:
        test_started = time.time()
        try:
            function()
        except unittest.SkipTest as reason:
            skipped.append(name)
            print('SKIP %s: %s' % (name, reason))
        except Exception:
            failed.append(name)
            print('FAIL %s\n%s' % (name, traceback.format_exc()))
        else:
            passed.append(name)
            print('PASS %s (%.1fs)' % (name, time.time() - test_started))
        sys.stdout.flush()
    print('%d skipped; %.0fs in all%s' % (len(skipped), time.time() - started,
                                          ''.join('\nfailed: ' + name for name in failed)))
    print('%d passed, %d failed' % (len(passed), len(failed)))
    return not failed


if __name__ == '__main__':
    sys.exit(0 if run_tests(collect_tests()) else 1)
