"""The fixtures the tests share: a small VGG on disk, a generated dataset and a trained run, each built once per
session under pytest's temporary folder, and fresh folders for a single test. Small shapes keep the suite fast
on a CPU. Plain helpers (main.py in or out of this process, file writers, constants) are in helpers.py.
"""
import functools
import tempfile

import pytest

from roadseg import process

process.use_onednn_kernels()  # as main.py does, before TensorFlow loads (with vgg_builder)

from roadseg import vgg_builder  # noqa: E402
from roadseg.data import roadgen  # noqa: E402
from tests.helpers import SMALL_WIDTH, only_run, run_main, train_args  # noqa: E402


@pytest.fixture(scope='session')
def small_vgg(tmp_path_factory):
    """A small VGG16-shaped SavedModel (tag vgg16, the five tensors) on disk, alone in its folder."""
    return vgg_builder.write_random_vgg16(str(tmp_path_factory.mktemp('vgg') / 'vgg'), width=SMALL_WIDTH, seed=1)


@pytest.fixture(scope='session')
def small_dataset(tmp_path_factory):
    """A generated KITTI-layout dataset (12 training, 8 test images); its data_road folder, whose parent is a
    --data-dir."""
    return roadgen.generate_dataset(str(tmp_path_factory.mktemp('kitti')), n_train=12, n_test=8,
                                    image_shape=(94, 310), seed=3)


@pytest.fixture(scope='session')
def quick_train_args(small_dataset, small_vgg):
    """helpers.train_args on small_dataset with small_vgg: quick_train_args(runs_dir, epochs=2, *extra)."""
    return functools.partial(train_args, data_road=small_dataset, vgg_dir=small_vgg)


@pytest.fixture(scope='session')
def small_trained_run(tmp_path_factory, quick_train_args):
    """A run folder trained for two epochs on small_dataset: checkpoints, export/, overlays."""
    runs_dir = str(tmp_path_factory.mktemp('trained'))
    run_main(quick_train_args(runs_dir, 2))
    return only_run(runs_dir)


@pytest.fixture
def new_folder(tmp_path):
    """For a test that needs several fresh folders: new_folder('runs') makes an empty folder inside tmp_path
    (a new one at every call, the name is its prefix) and returns its path."""
    return lambda name: tempfile.mkdtemp(prefix=name + '-', dir=tmp_path)
