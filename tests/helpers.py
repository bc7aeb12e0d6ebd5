"""Plain helpers the tests share (no fixtures: those are in conftest.py): main.py in this process or in a
child, small files in the layouts the datasets use, a local HTTP server, and the suite's constants.
"""
import contextlib
import functools
import glob
import http.server
import io
import os
import subprocess
import sys
import threading
import zipfile

import imageio.v3 as iio
import numpy as np

import main
from roadseg.data import datasets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(ROOT, '..', 'shared', 'data')
SMALL_WIDTH = 1 / 16
SMALL_SHAPE = (64, 192)
# Every child process a test starts is stopped after this long: a hang fails the test instead of stalling CI.
CHILD_TIMEOUT = 180


# --------------------------------------------------------------------------- main.py

def train_args(runs_dir, epochs=2, *extra, data_road, vgg_dir):
    """main.py train flags for a quick run on the generated dataset `data_road` with the VGG at `vgg_dir`
    (conftest's quick_train_args fills in the small ones)."""
    return ['train', '--data-dir', os.path.dirname(data_road), '--vgg-dir', vgg_dir,
            '--runs-dir', runs_dir, '--epochs', str(epochs), '--image-shape', *map(str, SMALL_SHAPE),
            '--batch-size', '4', '--learning-rate', '1e-3', '--keep-prob', '1', '--skip-scales', '1', '1',
            '--no-augment', *extra]


def only_run(runs_dir):
    runs = [os.path.join(runs_dir, name) for name in os.listdir(runs_dir)]
    assert len(runs) == 1, runs
    return runs[0]


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


def child_environment(**values):
    """os.environ for a child process as a user's shell would give it (without what this process's TensorFlow
    set up: oneDNN's frozen-weights switch, the log level, XLA's flags), with `values` set."""
    env = {key: value for key, value in os.environ.items()
           if key not in ('TF_ONEDNN_ASSUME_FROZEN_WEIGHTS', 'TF_CPP_MIN_LOG_LEVEL', 'TF_XLA_FLAGS')}
    env.update(values)
    return env


def project_importable(env):
    """`env` with the project root first on PYTHONPATH: a child's own script can import roadseg."""
    return dict(env, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, env.get('PYTHONPATH')])))


# --------------------------------------------------------------------------- files in the datasets' layouts

def write_png(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    iio.imwrite(path, np.asarray(image))
    return path


def kitti_label(height, width, road_rows):
    """A KITTI colour label: road in `road_rows`, not-road elsewhere, don't-care in the last row."""
    label = np.zeros((height, width, 3), np.uint8)
    label[:] = datasets.NOT_ROAD_COLOR
    label[road_rows] = datasets.ROAD_COLOR
    label[-1] = 0
    return label


def write_calibration(path, p2, r0_rect, tr_cam_to_road):
    """A KITTI calibration file (the keys of data_road's calib/ files, the BEV's three among them)."""
    matrices = {'P0': p2, 'P1': p2, 'P2': p2, 'P3': p2, 'R0_rect': r0_rect, 'Tr_velo_to_cam': tr_cam_to_road,
                'Tr_imu_to_velo': tr_cam_to_road, 'Tr_cam_to_road': tr_cam_to_road}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(''.join('%s: %s\n' % (key, ' '.join('%.12e' % value for value in np.ravel(matrix)))
                        for key, matrix in matrices.items()))
    return path


def write_camvid(root, size=(20, 30), with_test=False):
    """A tiny CamVid-layout folder in `root`: drive 0001TP (train), 0006R0 (train), 0016E5 (val), Seq05VD (test)."""
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


def zip_folder(folder, archive, arcname):
    with zipfile.ZipFile(archive, 'w') as zf:
        for path in glob.glob(os.path.join(folder, '**'), recursive=True):
            if os.path.isfile(path):
                zf.write(path, os.path.join(arcname, os.path.relpath(path, folder)))
    return archive


# --------------------------------------------------------------------------- HTTP without internet

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


def closed_port_url(name):
    """An address on this machine where nothing listens: a download there fails at once."""
    with http.server.HTTPServer(('127.0.0.1', 0), _QuietHandler) as probe:
        port = probe.server_address[1]
    return 'http://127.0.0.1:%d/%s' % (port, name)
