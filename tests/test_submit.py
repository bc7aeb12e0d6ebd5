"""python main.py submit: the KITTI road benchmark's files (bird's-eye view PNGs under the devkit's names, and their
zip), and the testing folders and output folders it refuses."""
import glob
import os
import shutil
import zipfile

import imageio.v3 as iio
import numpy as np
import pytest

from roadseg import config
from roadseg.commands import submit
from roadseg.data import datasets
from tests.helpers import SHARED_DATA, run_main, write_calibration

SAMPLE_TESTING = os.path.join(SHARED_DATA, 'kitti_road_sample', 'data_road', 'testing')
needs_sample = pytest.mark.skipif(not os.path.isdir(SAMPLE_TESTING),
                                  reason='../shared/data/kitti_road_sample is absent: the real test images are skipped')
# A camera 1.6 m above the road, looking straight ahead (the generated scenes are small: a short focal length).
P2 = np.array([[150.0, 0, 155, 0], [0, 150.0, 40, 0], [0, 0, 1, 0]])
TR_CAM_TO_ROAD = np.hstack([np.eye(3), [[0], [-1.6], [0]]])


def kitti_testing(root, images, calibration=None):
    """<root>/data_road/testing with links to `images` and a calibration of each (the file `calibration`, or the
    hand-built camera); returns --data-dir."""
    testing = os.path.join(root, 'data_road', 'testing')
    os.makedirs(os.path.join(testing, 'image_2'))
    for image in images:
        os.symlink(os.path.abspath(image), os.path.join(testing, 'image_2', os.path.basename(image)))
        target = os.path.join(testing, 'calib', os.path.basename(image).replace('.png', '.txt'))
        if calibration:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(calibration, target)
        else:
            write_calibration(target, P2, np.eye(3), TR_CAM_TO_ROAD)
    return root


def check_submission(out, images):
    """One 8-bit bird's-eye view PNG per test image under the devkit's name, and a zip of exactly those."""
    expected = sorted(os.path.basename(image).replace('_', '_road_', 1) for image in images)
    assert sorted(os.listdir(out)) == sorted(expected + [submit.SUBMISSION_ZIP])
    for name in expected:
        confidence = iio.imread(os.path.join(out, name))
        assert confidence.shape == config.BEV_SHAPE and confidence.dtype == np.uint8, name
        assert 0 < confidence.max() <= 255 and datasets.kitti_category(name) is not None
    with zipfile.ZipFile(os.path.join(out, submit.SUBMISSION_ZIP)) as archive:
        assert sorted(archive.namelist()) == expected, 'the PNGs at the zip\'s root'
        assert all(archive.read(name) == open(os.path.join(out, name), 'rb').read() for name in expected)


def test_submit_writes_a_bev_png_per_test_image_with_the_devkit_names_and_a_zip(small_trained_run, small_dataset,
                                                                                 tmp_path):
    images = datasets.kitti_test_images(small_dataset)
    data_dir = kitti_testing(str(tmp_path / 'data'), images)
    out = str(tmp_path / 'submission')
    stdout, stop = run_main(['submit', '--model', small_trained_run, '--data-dir', data_dir, '--out', out])
    assert stop is None, stop
    check_submission(out, images)
    assert stdout.splitlines()[-1] == (
        "submit: %d road confidence maps of the KITTI test images in the bird's-eye view (800x400, 8-bit PNG, named "
        'like um_road_000000.png) in %s, and zipped for upload: %s' % (len(images), out,
                                                                       os.path.join(out, submit.SUBMISSION_ZIP)))
    assert 'KITTI\'s test set has 290 (um 96, umm 94, uu 100)' in stdout
    _, stop = run_main(['submit', '--model', small_trained_run, '--data-dir', data_dir, '--out', out])
    assert '%d output file(s) already exist in %s' % (len(images) + 1, out) in stop, stop
    for inside in (os.path.join(data_dir, 'bev'), os.path.join(small_trained_run, 'bev')):
        _, stop = run_main(['submit', '--model', small_trained_run, '--data-dir', data_dir, '--out', inside])
        assert 'is inside the' in stop and not os.path.exists(inside), stop


def test_an_incomplete_testing_folder_is_refused_in_one_line_with_its_counts(small_dataset, tmp_path):
    images = datasets.kitti_test_images(small_dataset)
    data_dir = kitti_testing(str(tmp_path / 'data'), images)
    calib = os.path.join(data_dir, 'data_road', 'testing', 'calib')
    os.remove(os.path.join(calib, os.path.basename(images[0]).replace('.png', '.txt')))
    os.rename(os.path.join(calib, os.path.basename(images[1]).replace('.png', '.txt')),
              os.path.join(calib, 'uu_000999.txt'))
    out = str(tmp_path / 'submission')
    _, stop = run_main(['submit', '--model', 'no-model-needed', '--data-dir', data_dir, '--out', out])
    assert stop == ('main.py submit: %s is incomplete: 2 of %d images have no calibration in %s (e.g. %s); 1 '
                    'calibration files have no image (e.g. uu_000999.png); the benchmark needs every test image '
                    'with its calibration (unzip data_road.zip whole)'
                    % (os.path.join(data_dir, 'data_road', 'testing'), len(images), calib,
                       os.path.basename(images[0]).replace('.png', '.txt'))), stop
    assert not os.path.exists(out)


@needs_sample
def test_the_sample_testing_folder_lacks_calibrations_and_is_refused_before_any_work(tmp_path):
    _, stop = run_main(['submit', '--model', 'no-model-needed', '--data-dir', os.path.dirname(
        os.path.dirname(SAMPLE_TESTING)), '--out', str(tmp_path / 'out')])
    assert 'is incomplete: 22 of 23 images have no calibration' in stop and '\n' not in stop, stop


@needs_sample
def test_submit_maps_real_test_images_of_every_size_with_the_real_calibration(small_trained_run, tmp_path):
    by_size = {}
    for path in sorted(glob.glob(os.path.join(SAMPLE_TESTING, 'image_2', '*.png'))):
        by_size.setdefault(iio.improps(path).shape, path)
    assert len(by_size) == 4, sorted(by_size)
    data_dir = kitti_testing(str(tmp_path / 'data'), by_size.values(),
                              os.path.join(SAMPLE_TESTING, 'calib', 'um_000000.txt'))
    out = str(tmp_path / 'submission')
    _, stop = run_main(['submit', '--model', small_trained_run, '--data-dir', data_dir, '--out', out])
    assert stop is None, stop
    check_submission(out, by_size.values())
    from_above = iio.imread(os.path.join(out, os.path.basename(by_size[(375, 1242, 3)]).replace('_', '_road_')))
    assert not from_above[-1, 0] and not from_above[-1, -1], 'the near corners are out of view: 0'
