"""What the tests share: a scratch folder, a small VGG on disk, generated datasets and trained runs.

Each is built once per test process (lru_cache) and lives in one temporary folder removed at exit.
Small shapes keep the suite fast on a CPU.
"""
import atexit
import contextlib
import functools
import glob
import http.server
import io
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile

import imageio.v3 as iio
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from roadseg.data import datasets  # noqa: E402
import main  # noqa: E402
from roadseg.data import roadgen  # noqa: E402
from roadseg import vgg_builder  # noqa: E402

SHARED_DATA = os.path.join(ROOT, '..', 'shared', 'data')
SMALL_WIDTH = 1 / 16
SMALL_SHAPE = (64, 192)
# Every child process a test starts is stopped after this long: a hang fails the test instead of stalling CI.
CHILD_TIMEOUT = 180

_SCRATCH = tempfile.mkdtemp(prefix='fcn8-tests-')
atexit.register(shutil.rmtree, _SCRATCH, ignore_errors=True)


def scratch_dir(name):
    """A fresh folder inside the suite's temporary directory."""
    return tempfile.mkdtemp(prefix=name + '-', dir=_SCRATCH)


@functools.lru_cache(maxsize=None)
def small_vgg():
    """A small VGG16-shaped SavedModel (tag vgg16, the five tensors) on disk."""
    return vgg_builder.write_random_vgg16(os.path.join(scratch_dir('vgg'), 'vgg'), width=SMALL_WIDTH, seed=1)


@functools.lru_cache(maxsize=None)
def small_dataset():
    """A generated KITTI-layout dataset; returns its data_road folder (its parent is a --data-dir)."""
    return roadgen.generate_dataset(scratch_dir('kitti'), n_train=12, n_test=8, image_shape=(94, 310), seed=3)


def train_args(runs_dir, epochs=2, *extra):
    """main.py train flags for a quick run on small_dataset with small_vgg."""
    return ['train', '--data-dir', os.path.dirname(small_dataset()), '--vgg-dir', small_vgg(),
            '--runs-dir', runs_dir, '--epochs', str(epochs), '--image-shape', *map(str, SMALL_SHAPE),
            '--batch-size', '4', '--learning-rate', '1e-3', '--keep-prob', '1', '--skip-scales', '1', '1',
            '--no-augment', *extra]


def only_run(runs_dir):
    runs = [os.path.join(runs_dir, name) for name in os.listdir(runs_dir)]
    assert len(runs) == 1, runs
    return runs[0]


@functools.lru_cache(maxsize=None)
def small_trained_run():
    """A run folder trained for two epochs on small_dataset: checkpoints, export/, overlays."""
    runs_dir = scratch_dir('trained')
    run_main(train_args(runs_dir, 2))
    return only_run(runs_dir)


def run_main(argv):
    """main.run(argv) in this process: (its stdout, the SystemExit message or code, None if it returned)."""
    out = io.StringIO()
    exit_value = None
    with contextlib.redirect_stdout(out):
        try:
            main.run(argv)
        except SystemExit as stop:
            exit_value = stop.code
    return out.getvalue(), exit_value


def main_py(argv, timeout=CHILD_TIMEOUT, env=None, **kwargs):
    """python main.py argv in a child process (CompletedProcess, text); fails the test on a hang."""
    return subprocess.run([sys.executable, os.path.join(ROOT, 'main.py')] + list(argv), capture_output=True,
                          text=True, timeout=timeout, env=child_environment() if env is None else env,
                          cwd=kwargs.pop('cwd', ROOT), **kwargs)


def write_png(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    iio.imwrite(path, np.asarray(image))
    return path


def camvid_folder(size=(20, 30), with_test=False):
    """A tiny CamVid-layout folder: drive 0001TP (train), 0006R0 (train), 0016E5 (val), Seq05VD (test)."""
    root = scratch_dir('camvid')
    splits = [('train', '0001TP', 2), ('train', '0006R0', 2), ('val', '0016E5', 2)]
    splits += [('test', 'Seq05VD', 2)] if with_test else []
    for split, drive, count in splits:
        for i in range(count):
            ids = np.full(size, 1, np.uint8)
            ids[size[0] // 2:] = datasets.CAMVID_ROAD
            ids[0] = datasets.CAMVID_UNLABELLED
            name = '%s_%06d.png' % (drive, i)
            write_png(os.path.join(root, split, name), np.full(size + (3,), 60 + 40 * i, np.uint8))
            write_png(os.path.join(root, split + 'annot', name), ids)
    return root


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


def kitti_label(height, width, road_rows):
    """A KITTI colour label: road in `road_rows`, not-road elsewhere, don't-care in the last row."""
    from roadseg.data import datasets
    label = np.zeros((height, width, 3), np.uint8)
    label[:] = datasets.NOT_ROAD_COLOR
    label[road_rows] = datasets.ROAD_COLOR
    label[-1] = 0
    return label


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


@contextlib.contextmanager
def environment(**values):
    """Set (value) or remove (None) environment variables for the block."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)
        yield
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)


def child_environment(**values):
    """os.environ for a child process as a user's shell would give it (without what this process's TensorFlow
    set up: oneDNN's frozen-weights switch, tfv1's log level), with `values` set."""
    env = {key: value for key, value in os.environ.items()
           if key not in ('TF_ONEDNN_ASSUME_FROZEN_WEIGHTS', 'TF_CPP_MIN_LOG_LEVEL', 'TF_XLA_FLAGS')}
    env.update(values)
    return env
