"""What a run takes in, against what is on disk: the dataset-specific flags against the dataset found, the images
that train, choose and report kept apart (or the sharing said), a run pointed at its moved VGG16 and data, and
finish refusing to export a model it cannot test and overlay.
"""
import hashlib
import json
import os
import shutil

import numpy as np
import pytest

from roadseg import cli, config, vgg_builder
from roadseg.data import datasets, splits
from roadseg.errors import DatasetError
from tests.helpers import SMALL_WIDTH, only_run, run_main, train_args, write_camvid, write_png
from tests.test_cityscapes import write_cityscapes


def _refusal(argv):
    """main.py's one-line message for argv (which must stop before any work)."""
    _, message = run_main(argv)
    assert isinstance(message, str) and message.startswith('main.py %s: ' % argv[0]), message
    assert '\n' not in message, message
    return message


def _file_bytes(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


# --------------------------------------------------------------------------- item 3: flags against the dataset

@pytest.fixture(scope='module')
def layouts(tmp_path_factory):
    """A CamVid, a Cityscapes and a KITTI-layout folder (the last without KITTI in it: read as KITTI)."""
    root = tmp_path_factory.mktemp('layouts')
    return {'camvid': write_camvid(str(root / 'camvid'), with_test=True),
            'cityscapes': write_cityscapes(str(root / 'cityscapes'), {'train': {'aachen': 1, 'ulm': 1},
                                                                      'val': {'lindau': 1}}, shape=(16, 32)),
            'kitti': str(root / 'kitti')}


# (command, layout, flags, what the line must say)
FOREIGN_FLAGS = [
    ('train', 'camvid', ['--val-fraction', '0.2'], 'is a CamVid folder', 'only --val-drive'),
    ('train', 'camvid', ['--labels', 'mask'], 'is a CamVid folder', '--labels is for KITTI Road'),
    ('train', 'camvid', ['--val-cities', 'ulm'], 'is a CamVid folder', '--val-cities is for Cityscapes'),
    ('train', 'camvid', ['--kitti-url', 'http://x/data_road.zip'], 'is a CamVid folder', 'only --val-drive'),
    ('train', 'cityscapes', ['--val-fraction', '0.2'], 'is a Cityscapes folder', 'only --val-cities'),
    ('train', 'cityscapes', ['--labels', 'kitti'], 'is a Cityscapes folder', 'only --val-cities'),
    ('train', 'cityscapes', ['--val-drive', '0001TP'], 'is a Cityscapes folder', '--val-drive is for CamVid'),
    ('train', 'cityscapes', ['--kitti-url', 'http://x/data_road.zip'], 'is a Cityscapes folder', 'only --val-cities'),
    ('train', 'kitti', ['--val-cities', 'ulm'], 'read as KITTI Road', 'only --labels, --val-fraction, --kitti-url'),
    ('train', 'kitti', ['--val-drive', '0001TP'], 'read as KITTI Road', '--val-drive is for CamVid'),
    ('train', 'kitti', ['--classes', 'all'], 'read as KITTI Road', 'whose labels mark only road'),
    ('demo', 'kitti', ['--val-drive', '0001TP'], 'the demo trains on generated roads', 'none of the dataset-specific'),
    ('demo', 'kitti', ['--folds'], 'the demo trains on generated roads', 'none of the dataset-specific'),
    ('demo', 'kitti', ['--classes', 'all'], 'the demo trains on generated roads', 'none of the dataset-specific'),
]


@pytest.mark.parametrize('command, layout, flags, found, takes', FOREIGN_FLAGS)
def test_a_flag_the_dataset_found_does_not_take_is_refused_in_one_line(layouts, command, layout, flags, found,
                                                                       takes, tmp_path):
    runs = str(tmp_path / 'runs')
    message = _refusal([command, '--data-dir', layouts[layout], '--runs-dir', runs, *flags])
    for text in (flags[0], layouts[layout], found, takes):
        assert text in message, (text, message)
    assert not os.path.exists(runs)


def test_the_flags_a_dataset_takes_pass_and_the_table_is_the_one_source(layouts):
    assert cli.parse_args(['train', '--data-dir', layouts['camvid'], '--val-drive', '0001TP']).val_drive == '0001TP'
    assert cli.parse_args(['demo', '--data-dir', layouts['camvid'], '--val-drive', '0001TP']).val_drive == '0001TP'
    assert cli.parse_args(['demo', '--data-dir', layouts['camvid'], '--classes', 'all']).classes == 'all'
    assert cli.parse_args(['demo', '--data-dir', layouts['camvid']]).classes == 'road'
    assert cli.parse_args(['train', '--data-dir', layouts['cityscapes'], '--val-cities', 'ulm']).val_cities == ['ulm']
    assert cli.parse_args(['train', '--data-dir', layouts['kitti'], '--val-fraction', '0.2', '--labels', 'mask'])
    assert cli.parse_args(['evaluate', '--model', 'm', '--data-dir', layouts['camvid'], '--split', 'val'])
    every = {flag for table in config.DATASET_FLAGS.values() for flags in table.values() for flag in flags}
    assert every == {'labels', 'val_fraction', 'kitti_url', 'val_drive', 'val_cities', 'split', 'folds', 'classes'}


def test_evaluate_split_on_kitti_and_dataset_flags_on_resume_are_refused(layouts, small_trained_run):
    message = _refusal(['evaluate', '--model', small_trained_run, '--data-dir', layouts['camvid'] + '/..',
                        '--split', 'test'])
    assert '--split does not apply here' in message and 'KITTI Road' in message and 'CamVid and Cityscapes' in message
    before = _file_bytes(os.path.join(small_trained_run, 'run.json'))
    message = _refusal(['train', '--resume', small_trained_run, '--val-drive', '0001TP'])
    assert 'the run %s trains on KITTI Road' % small_trained_run in message and '--val-drive is for CamVid' in message
    assert 'cannot change on --resume' in _refusal(['train', '--resume', small_trained_run, '--val-fraction', '0.3'])
    assert 'drop one of them' in _refusal(['train', '--vgg-dir', 'v', '--vgg-source', 'keras'])
    assert _file_bytes(os.path.join(small_trained_run, 'run.json')) == before


# --------------------------------------------------------------------------- item 4: train, choose and report apart

def test_a_cityscapes_city_in_train_and_val_is_refused_naming_it_and_both_folders(tmp_path, small_vgg):
    root = write_cityscapes(str(tmp_path / 'cityscapes'), {'train': {'aachen': 1, 'ulm': 1, 'lindau': 1},
                                                           'val': {'lindau': 1}}, shape=(16, 32))
    runs = str(tmp_path / 'runs')
    os.makedirs(runs)
    message = _refusal(['train', '--data-dir', root, '--vgg-dir', small_vgg, '--runs-dir', runs, '--val-cities',
                        'ulm'])
    for text in ('city lindau is in both', os.path.join(root, 'leftImg8bit', 'train'),
                 os.path.join(root, 'leftImg8bit', 'val'), 'train on the images it reports on'):
        assert text in message, (text, message)
    assert os.listdir(runs) == []


def test_a_camvid_frame_in_two_splits_is_refused(tmp_path):
    root = write_camvid(str(tmp_path / 'camvid'), with_test=True)
    for kind in ('', 'annot'):
        shutil.copy(os.path.join(root, 'train' + kind, '0001TP_000000.png'), os.path.join(root, 'test' + kind))
    with pytest.raises(DatasetError, match='two files of the same name: a run would report on images it trains on'):
        splits.training_data(cli.parse_args(['train', '--data-dir', root]))


def test_camvid_test_frames_of_a_training_drive_are_said_in_the_summary_and_recorded(tmp_path, small_vgg):
    root = write_camvid(str(tmp_path / 'camvid'), with_test=True)
    rng = np.random.default_rng(0)
    ids = np.full((20, 30), datasets.CAMVID_ROAD, np.uint8)
    for name in ('0001TP_000100.png', '0001TP_000101.png'):  # new frames of a drive that trains, as SegNet's test
        write_png(os.path.join(root, 'test', name), rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
        write_png(os.path.join(root, 'testannot', name), ids)
    runs = str(tmp_path / 'runs')
    out, exit_value = run_main(['demo', '--data-dir', root, '--vgg-dir', small_vgg, '--runs-dir', runs,
                                '--epochs', '1', '--image-shape', '16', '24', '--batch-size', '4', '--no-augment'])
    assert exit_value is None, exit_value
    lines = out.strip().splitlines()
    assert 'test includes 2 images of drive 0001TP, which training saw' in lines[-1], lines[-1]
    assert '; by drive: 0001TP 0.' in lines[-1] and ' on 2, Seq05VD ' in lines[-1], 'each drive as well as all'
    assert any(line.startswith('CamVid: test includes 2 images of drive 0001TP') for line in lines), lines
    with open(os.path.join(only_run(runs), 'test_metrics.json')) as f:
        measures = json.load(f)
    assert measures['test_overlap']['drives'] == {'0001TP': {'images': 2, 'with': 'training'}}
    assert {drive: group['images'] for drive, group in measures['groups'].items()} == {'0001TP': 2, 'Seq05VD': 2}
    out, exit_value = run_main(['finish', only_run(runs)])
    assert exit_value is None and '(test includes 2 images of drive 0001TP, which training saw' in out, out


# --------------------------------------------------------------------------- items 5 and 9: moved inputs, finish

@pytest.fixture
def moved_run(tmp_path, small_dataset, small_vgg):
    """(run, places): a one-epoch run on its own copies of the data and VGG16, both then moved away."""
    places = {'data': str(tmp_path / 'kitti'), 'vgg': str(tmp_path / 'vgg')}
    shutil.copytree(os.path.dirname(small_dataset), places['data'])
    shutil.copytree(small_vgg, places['vgg'])
    runs = str(tmp_path / 'runs')
    _, exit_value = run_main(train_args(runs, 1, data_road=os.path.join(places['data'], 'data_road'),
                                        vgg_dir=places['vgg']))
    assert exit_value is None, exit_value
    for name, path in places.items():
        os.rename(path, path + '-moved')
    return only_run(runs), places


def test_a_moved_vgg_or_data_folder_is_named_up_front_and_nothing_changes(moved_run):
    run, places = moved_run
    run_json = os.path.join(run, 'run.json')
    before = _file_bytes(run_json), _file_bytes(os.path.join(run, 'export', 'saved_model.pb'))
    for argv, folder, flag in ((['train', '--resume', run, '--epochs', '3'], places['vgg'], '--vgg-dir'),
                               (['finish', run], places['vgg'], '--vgg-dir'),
                               (['finish', run, '--vgg-dir', places['vgg'] + '-moved'], places['data'],
                                '--data-dir')):
        message = _refusal(argv)
        assert '%s is missing (moved or deleted)' % os.path.join(folder, 'data_road' if flag == '--data-dir' else '')\
            .rstrip('/') in message, message
        assert 'python main.py %s %s %s' % ('train --resume' if argv[0] == 'train' else 'finish', run, flag) in message
        assert (_file_bytes(run_json), _file_bytes(os.path.join(run, 'export', 'saved_model.pb'))) == before, argv
    other_vgg = vgg_builder.write_random_vgg16(places['vgg'] + '-other', width=2 * SMALL_WIDTH)
    assert 'is not the VGG16 this run was built on' in _refusal(['finish', run, '--vgg-dir', other_vgg])
    assert 'does not hold this run\'s data' in _refusal(['finish', run, '--vgg-dir', places['vgg'] + '-moved',
                                                         '--data-dir', places['vgg'] + '-moved'])
    assert _file_bytes(run_json) == before[0]


def test_a_run_pointed_at_its_moved_vgg_and_data_finishes_and_resumes(moved_run):
    run, places = moved_run
    out, exit_value = run_main(['finish', run, '--vgg-dir', places['vgg'] + '-moved',
                                '--data-dir', places['data'] + '-moved'])
    assert exit_value is None, exit_value
    new_root = os.path.join(places['data'] + '-moved', 'data_road')
    assert "The run's data folder is now %s (was %s" % (new_root, os.path.join(places['data'], 'data_road')) in out
    assert "The run's VGG16 is now %s" % (places['vgg'] + '-moved') in out
    with open(os.path.join(run, 'run.json')) as f:
        recorded = json.load(f)
    assert recorded['vgg_path'] == places['vgg'] + '-moved' and recorded['data_root'] == new_root
    assert all(path.startswith(new_root + os.sep) for pair in recorded['train'] + recorded['val'] for path in pair)
    assert out.strip().splitlines()[-1].endswith('model and 8 overlays in %s' % run)
    for path in places.values():
        os.rename(path + '-moved', path + '-again')
    out, exit_value = run_main(['train', '--resume', run, '--epochs', '2', '--vgg-dir', places['vgg'] + '-again',
                                '--data-dir', os.path.join(places['data'] + '-again', 'data_road')])
    assert exit_value is None, exit_value
    assert 'after epoch 1 of 2' in out and 'model and 8 overlays in' in out.strip().splitlines()[-1]


def test_finish_refuses_without_its_test_images_and_leaves_no_overlay_of_an_older_model(moved_run):
    run, places = moved_run
    for path in places.values():
        os.rename(path + '-moved', path)
    test_dir = os.path.join(places['data'], 'data_road', 'testing', 'image_2')
    names = sorted(os.listdir(test_dir))
    before = {name: _file_bytes(os.path.join(run, name)) for name in names}
    os.rename(test_dir, test_dir + '-gone')
    message = _refusal(['finish', run])
    assert "8 of the run's 8 files are missing from its data folder" in message and '--data-dir' in message, message
    assert {name: _file_bytes(os.path.join(run, name)) for name in names} == before
    os.rename(test_dir + '-gone', test_dir)
    with open(os.path.join(test_dir, names[0]), 'wb') as f:
        f.write(b'not an image')
    out, exit_value = run_main(['finish', run])
    assert exit_value is None, exit_value
    assert out.strip().splitlines()[-1].endswith('model and 7 overlays in %s (1 unreadable test image(s) have none)'
                                                 % run), out
    assert not os.path.exists(os.path.join(run, names[0])), 'the overlay of an older model is gone'
    assert all(os.path.exists(os.path.join(run, name)) for name in names[1:])
