"""demo --folds: leave-one-drive-out over CamVid's drives. One run per held-out drive, never trained on it; the table
is those runs' own figures; the epoch is chosen by the mean over the folds; test/ is never read."""
import json
import os

import numpy as np
import pytest

from roadseg import config
from roadseg.commands import folds
from roadseg.data import datasets, splits
from roadseg.errors import DatasetError
from tests.helpers import SMALL_SHAPE, run_main, write_camvid


def test_the_folds_choose_the_epoch_of_the_best_mean_and_name_the_worst_drive():
    curves = {'a': [0.5, 0.8, 0.7], 'b': [0.6, 0.6, 0.9], 'c': [0.2, 0.5, 0.4]}
    summary = folds.summarise(curves, {'a': 3, 'b': 4, 'c': 5})
    chosen, last = summary['chosen'], summary['last']
    assert chosen['epoch'] == 3 and chosen['mean'] == pytest.approx((0.7 + 0.9 + 0.4) / 3)  # 0.667 > 0.633
    assert (chosen['worst'], chosen['worst_drive']) == (0.4, 'c') and last['epoch'] == 3
    table = folds.describe(summary)
    assert '| c | 5 | 0.400 | 0.400 |' in table and '**0.667**' in table


def test_no_held_out_drive_trains_on_every_drive(tmp_path):
    root = write_camvid(str(tmp_path / 'camvid'))
    train, val, test = splits.camvid_splits(root, config.NO_VAL_DRIVE)
    assert len(train) == 6 and val == [] and test == []
    assert splits.camvid_drives(root) == ['0001TP', '0006R0', '0016E5']
    with pytest.raises(DatasetError, match='among 0001TP, 0006R0, 0016E5, or none'):
        splits.camvid_splits(root, 'Seq05VD')


def test_demo_folds_holds_out_each_drive_once_and_reports_the_runs_own_figures(tmp_path, small_vgg):
    root = write_camvid(str(tmp_path / 'camvid'), size=(24, 36), with_test=True)
    with open(os.path.join(root, 'test', os.listdir(os.path.join(root, 'test'))[0]), 'wb') as f:
        f.write(b'not a png')  # test/ is never read: a broken test image cannot matter
    runs_dir = str(tmp_path / 'runs')
    out, exit_value = run_main(['demo', '--data-dir', root, '--folds', '--epochs', '2', '--batch-size', '2',
                                '--image-shape', *map(str, SMALL_SHAPE), '--vgg-dir', small_vgg, '--runs-dir',
                                runs_dir])
    assert exit_value is None, out
    [folder] = [os.path.join(runs_dir, 'folds', name) for name in os.listdir(os.path.join(runs_dir, 'folds'))]
    with open(os.path.join(folder, folds.FOLDS_FILE)) as f:
        summary = json.load(f)
    assert summary['drives'] == ['0001TP', '0006R0', '0016E5'] and summary['epochs'] == 2
    for drive, run in summary['runs'].items():
        with open(os.path.join(run, config.RUN_CONFIG_FILE)) as f:
            run_config = json.load(f)
        assert {datasets.camvid_drive(image) for image, _ in run_config['val']} == {drive}
        assert drive not in {datasets.camvid_drive(image) for image, _ in run_config['train']}
        assert run_config['test'] == [] and not os.path.isdir(os.path.join(run, 'export')), 'no test, no finish'
        with open(os.path.join(run, 'metrics.csv')) as f:
            ious = [float(line.split(',')[line_header(run).index('val_iou')]) for line in f.readlines()[1:]]
        assert summary['curves'][drive] == pytest.approx(ious)
    means = np.mean([summary['curves'][drive] for drive in summary['drives']], axis=0)
    assert summary['chosen']['epoch'] == int(np.argmax(means)) + 1
    assert summary['chosen']['mean'] == pytest.approx(means.max())
    assert '| **mean** | | **%.3f** |' % means.max() in out and folder in out


def line_header(run):
    with open(os.path.join(run, 'metrics.csv')) as f:
        return f.readline().strip().split(',')


def test_folds_with_a_val_drive_is_refused_in_one_line(tmp_path):
    root = write_camvid(str(tmp_path / 'camvid'))
    out, message = run_main(['demo', '--data-dir', root, '--folds', '--val-drive', '0001TP', '--runs-dir',
                             str(tmp_path / 'runs')])
    assert '--folds holds out each drive in turn' in message and '\n' not in message
    assert not os.path.exists(tmp_path / 'runs')
