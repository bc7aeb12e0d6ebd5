"""Downloads, for real, from a local HTTP server: VGG16 (vgg.zip or Keras' weights) and KITTI Road."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import helper
import main
from roadseg import errors, vgg_builder
from roadseg.data import datasets, downloads
from roadseg.process import graph_mode_tf
from roadseg.training import run_folder
from tests.helpers import LocalServer, closed_port_url, kitti_label, run_main, write_png, zip_folder

tf = graph_mode_tf()


def test_maybe_download_pretrained_vgg_downloads_unpacks_and_reuses(new_folder, small_vgg):
    served = new_folder('served')
    zip_folder(small_vgg, os.path.join(served, 'vgg.zip'), 'vgg')
    data_dir = new_folder('data')
    with LocalServer(served) as server:
        vgg_path = helper.maybe_download_pretrained_vgg(data_dir, server.url('vgg.zip'))
    assert vgg_path == os.path.join(data_dir, 'vgg') and downloads.vgg_is_complete(vgg_path)
    assert sorted(os.listdir(data_dir)) == ['vgg'], 'no archive or temporary folder is left behind'
    with tf.Graph().as_default(), tf.Session() as sess:
        main.load_vgg(sess, vgg_path)
    stamp = os.path.getmtime(os.path.join(vgg_path, 'saved_model.pb'))
    assert helper.maybe_download_pretrained_vgg(data_dir) == vgg_path  # present: no network needed
    assert os.path.getmtime(os.path.join(vgg_path, 'saved_model.pb')) == stamp


def test_maybe_download_pretrained_vgg_offline_and_incomplete(tmp_path):
    data_dir = str(tmp_path)
    url = closed_port_url('vgg.zip')
    with pytest.raises(errors.DownloadError) as caught:
        helper.maybe_download_pretrained_vgg(data_dir, url)
    for text in (url, 'by hand', os.path.join(data_dir, 'vgg', 'saved_model.pb')):
        assert text in str(caught.value), (text, str(caught.value))
    assert os.listdir(data_dir) == [], 'a failed download leaves nothing behind'
    os.makedirs(os.path.join(data_dir, 'vgg'))
    with pytest.raises(errors.DatasetError) as caught:
        helper.maybe_download_pretrained_vgg(data_dir)
    assert 'incomplete' in str(caught.value) and 'saved_model.pb' in str(caught.value), str(caught.value)


def test_bad_archives_and_checksums_are_refused_and_leave_nothing(new_folder, small_vgg, monkeypatch):
    served = new_folder('bad-served')
    with open(os.path.join(served, 'corrupt.zip'), 'wb') as f:
        f.write(b'PK\x03\x04 this is not a zip archive')
    zip_folder(small_vgg, os.path.join(served, 'wrong-folder.zip'), 'not_vgg')
    with open(os.path.join(served, 'weights.h5'), 'wb') as f:
        f.write(b'x' * 1000)
    with LocalServer(served) as server:
        for name, expected in (('corrupt.zip', 'not a valid zip archive'), ('wrong-folder.zip', "no folder 'vgg'")):
            data_dir = new_folder('bad-zip')
            with pytest.raises(errors.DownloadError) as caught:
                helper.maybe_download_pretrained_vgg(data_dir, server.url(name))
            assert expected in str(caught.value), (expected, str(caught.value))
            assert os.listdir(data_dir) == [], os.listdir(data_dir)
        url, target = server.url('weights.h5'), os.path.join(new_folder('md5'), 'weights.h5')
        with monkeypatch.context() as patched:
            patched.setitem(downloads.KNOWN_MD5, url, '0' * 32)
            with pytest.raises(errors.DownloadError) as caught:
                downloads.download_file(url, target)
        assert 'arrived corrupt' in str(caught.value) and '0' * 32 in str(caught.value), str(caught.value)
        assert os.listdir(os.path.dirname(target)) == []


def test_ensure_vgg_names_both_addresses_when_offline(new_folder, monkeypatch):
    data_dir = new_folder('no-vgg')
    udacity, keras = closed_port_url('vgg.zip'), closed_port_url('vgg16_weights.h5')
    with monkeypatch.context() as patched:
        patched.setenv('KERAS_HOME', new_folder('empty-keras-home'))
        with pytest.raises(errors.DownloadError) as caught:
            vgg_builder.ensure_vgg(data_dir, 'udacity', udacity_url=udacity, keras_url=keras)
    for text in (udacity, keras, 'by hand', '--vgg-source keras'):
        assert text in str(caught.value), (text, str(caught.value))
    with pytest.raises(ValueError) as caught:
        vgg_builder.ensure_vgg(data_dir, 'torch')
    assert 'udacity' in str(caught.value) and 'keras' in str(caught.value), str(caught.value)
    assert os.listdir(data_dir) == []


def test_maybe_download_kitti(new_folder, small_dataset):
    data_dir = new_folder('kitti-missing')
    with pytest.raises(errors.DatasetError) as caught:
        downloads.maybe_download_kitti(data_dir)
    message = str(caught.value)
    for text in (datasets.KITTI_PAGE, datasets.KITTI_ARCHIVE, '--kitti-url', 'main.py demo'):
        assert text in message, (text, message)
    assert os.path.join(data_dir, 'data_road', 'training', 'image_2') in message
    served = new_folder('served-kitti')
    zip_folder(small_dataset, os.path.join(served, 'data_road.zip'), 'data_road')
    with LocalServer(served) as server:
        data_road = downloads.maybe_download_kitti(data_dir, server.url('data_road.zip'))
        with pytest.raises(errors.DownloadError) as caught:
            downloads.maybe_download_kitti(new_folder('k'), server.url('absent.zip'))
    bad = str(caught.value)
    assert 'absent.zip' in bad and datasets.KITTI_PAGE in bad, bad
    assert '404' in bad
    assert len(datasets.kitti_road_pairs(os.path.join(data_road, 'training'))) == 12
    assert sorted(os.listdir(data_dir)) == ['data_road']


def test_train_without_vgg_dir_takes_data_dir_vgg_and_kitti_url_downloads_kitti(new_folder, small_vgg,
                                                                                 small_dataset):
    data_dir, runs = new_folder('cli-data'), new_folder('cli-runs')
    shutil.copytree(small_vgg, os.path.join(data_dir, 'vgg'))
    served = new_folder('cli-served')
    zip_folder(small_dataset, os.path.join(served, 'data_road.zip'), 'data_road')
    with LocalServer(served) as server:
        out, stop = run_main(['train', '--data-dir', data_dir, '--kitti-url', server.url('data_road.zip'),
                              '--runs-dir', runs, '--epochs', '1', '--image-shape', '64', '192', '--batch-size', '4',
                              '--no-augment'])
    assert stop is None and 'train: done' in out, (out, stop)
    (run,) = os.listdir(runs)
    # the run's own record says where its data and model came from
    config = run_folder.RunFolder(os.path.join(runs, run)).read_config()
    assert config.vgg_path == os.path.join(os.path.abspath(data_dir), 'vgg')
    assert config.data_root == os.path.join(os.path.abspath(data_dir), 'data_road')


KERAS_REFERENCE_SCRIPT = """
import sys
import h5py
import keras
import numpy as np
keras.utils.set_random_seed(0)
model = keras.applications.VGG16(weights=None, include_top=True)
# Keras' published VGG16 file is in the legacy HDF5 layout (one group per layer): write the random weights so.
with h5py.File(sys.argv[1], 'w') as f:
    layers = [layer for layer in model.layers if layer.weights]
    f.attrs['layer_names'] = [layer.name.encode() for layer in layers]
    for layer in layers:
        names = [('%s/%s:0' % (layer.name, ('kernel', 'bias')[i])).encode() for i in range(len(layer.weights))]
        group = f.create_group(layer.name)
        group.attrs['weight_names'] = names
        for name, value in zip(names, layer.get_weights()):
            group.create_dataset(name.decode(), data=value)
probe = keras.Model(model.input, [model.get_layer(n).output for n in ('block3_pool', 'block4_pool', 'fc2')])
images = np.load(sys.argv[2])
outputs = probe.predict(keras.applications.vgg16.preprocess_input(images.copy()), verbose=0)
np.savez(sys.argv[3], block3_pool=outputs[0], block4_pool=outputs[1], fc2=outputs[2])
"""


def _keras_reference(folder, images):
    """Weights and activations of a random Keras VGG16, from a separate (eager) Python."""
    script = os.path.join(folder, 'reference.py')
    weights = os.path.join(folder, os.path.basename(downloads.KERAS_VGG16_URL))
    inputs, outputs = os.path.join(folder, 'images.npy'), os.path.join(folder, 'activations.npz')
    with open(script, 'w') as f:
        f.write(KERAS_REFERENCE_SCRIPT)
    np.save(inputs, images)
    subprocess.run([sys.executable, script, weights, inputs, outputs], check=True, capture_output=True, timeout=300)
    return weights, dict(np.load(outputs))


def _relative_error(actual, expected):
    return np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12)


def _kitti_with_a_foreign_label(data_dir):
    """KITTI layout whose validation labels are 0/255 masks: train stops after getting VGG, before training."""
    training = os.path.join(data_dir, 'data_road', 'training')
    for i in range(6):
        write_png(os.path.join(training, 'image_2', 'um_%06d.png' % i), np.full((24, 32, 3), 90, np.uint8))
        label = kitti_label(24, 32, slice(12, 24))
        label[label[..., 0] == 255] = 255  # white road, white not-road: not KITTI's colours
        write_png(os.path.join(training, 'gt_image_2', 'um_road_%06d.png' % i), label)


def test_keras_vgg16_is_fetched_when_vgg_zip_fails_cached_as_keras_does_and_converted_exactly(new_folder,
                                                                                               monkeypatch):
    folder = new_folder('keras')
    images = np.random.default_rng(0).uniform(0, 255, (1, 224, 224, 3)).astype(np.float32)
    weights, expected = _keras_reference(folder, images)
    data_dir, keras_home = new_folder('data'), new_folder('keras-home')
    monkeypatch.setenv('KERAS_HOME', keras_home)
    with LocalServer(folder) as server:
        vgg_path = vgg_builder.ensure_vgg(data_dir, 'udacity', udacity_url=closed_port_url('vgg.zip'),
                                        keras_url=server.url(os.path.basename(weights)))
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


def test_vgg_source_keras_reads_keras_cache_and_says_a_corrupt_file_in_one_line(new_folder, monkeypatch):
    """Through the command line: the cached file is read, not downloaded again (Keras' own address is not
    reachable here, so a download would fail differently), and its damage is said in one line."""
    keras_home, cli_data = new_folder('corrupt-keras-home'), new_folder('corrupt-keras')
    _kitti_with_a_foreign_label(cli_data)
    monkeypatch.setenv('KERAS_HOME', keras_home)
    os.makedirs(os.path.dirname(downloads.keras_weights_path()))
    with open(downloads.keras_weights_path(), 'wb') as f:
        f.write(b'\x89HDF\r\n\x1a\n truncated')
    _, stop = run_main(['train', '--data-dir', cli_data, '--vgg-source', 'keras', '--runs-dir',
                        new_folder('corrupt-keras-runs')])
    assert 'could not read the Keras VGG16 weights' in str(stop) and 'delete the file' in str(stop), stop
    assert '\n' not in str(stop) and not os.path.exists(os.path.join(cli_data, 'vgg'))
