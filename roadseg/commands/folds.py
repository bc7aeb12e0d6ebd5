"""python main.py demo --data-dir <CamVid> --folds: leave-one-drive-out. Each drive of train/ and val/ is held out in
turn: a run trains on the others and scores it after every epoch. The epoch whose mean held-out road IoU over the
folds is highest is the epoch count the folds choose; that mean, and the worst fold there, decide whether a recipe
change is kept (one easy drive can make any recipe look good). Nothing is tested: test/ is never read."""
import json
import os

import numpy as np

from roadseg import atomic
from roadseg.commands import train
from roadseg.data import splits

FOLDS_FILE = 'folds.json'


def leave_one_drive_out(args):
    """Train one run per held-out drive into one folds folder, then print and write the table."""
    drives = splits.camvid_drives(args.data_dir)
    folder = atomic.new_timestamped_folder(os.path.join(args.runs_dir, 'folds'))
    vgg_path = train.demo_vgg(args)
    curves, sizes, runs = {}, {}, {}
    for number, drive in enumerate(drives, 1):
        print('fold %d of %d: drive %s held out, trained on %s' % (number, len(drives), drive,
                                                                  ', '.join(other for other in drives if other != drive)))
        data = splits.camvid_data(args.data_dir, drive, with_test=False)
        run, _ = train.train_new_run(args, train.run_config(args, data, vgg_path), runs_dir=folder, finish=False)
        curves[drive], sizes[drive], runs[drive] = held_out_curve(run.read_metrics()), len(data.val), run.path
    summary = summarise(curves, sizes)
    summary.update(runs=runs, flags=sorted(args.given - {'folds'}))
    atomic.write_file(os.path.join(folder, FOLDS_FILE), json.dumps(summary, indent=1).encode())
    print(describe(summary))
    print('demo --folds: the folds and their runs are in %s' % folder)


def held_out_curve(metrics_rows):
    """The held-out road IoU after each epoch, from a run's metrics.csv rows."""
    return [float(row['val_iou']) for row in sorted(metrics_rows, key=lambda row: int(row['epoch']))]


def summarise(curves, sizes):
    """The folds' figures: the epoch with the best mean held-out IoU over the folds, each fold's IoU there, their
    mean and worst; and the same at the last epoch (what the recipe's epoch count gives)."""
    drives = sorted(curves)
    epochs = min(len(curves[drive]) for drive in drives)
    table = np.array([curves[drive][:epochs] for drive in drives])
    means = table.mean(axis=0)
    chosen = int(np.argmax(means))

    def at(index):
        column = table[:, index]
        return {'epoch': index + 1, 'iou': dict(zip(drives, map(float, column))), 'mean': float(column.mean()),
                'worst': float(column.min()), 'worst_drive': drives[int(np.argmin(column))]}

    return {'drives': drives, 'images': sizes, 'epochs': epochs, 'chosen': at(chosen), 'last': at(epochs - 1),
            'curves': {drive: curves[drive][:epochs] for drive in drives}}


def describe(summary):
    """The table a person reads: one row per held-out drive, then the mean and the worst."""
    chosen, last = summary['chosen'], summary['last']
    lines = ['Leave-one-drive-out: held-out road IoU (each drive scored by the run that never trained on it)',
             '| held-out drive | images | at epoch %d (best mean) | at epoch %d (last) |'
             % (chosen['epoch'], last['epoch']), '|---|---|---|---|']
    lines += ['| %s | %d | %.3f | %.3f |' % (drive, summary['images'][drive], chosen['iou'][drive], last['iou'][drive])
              for drive in summary['drives']]
    lines += ['| **mean** | | **%.3f** | **%.3f** |' % (chosen['mean'], last['mean']),
              '| worst | | %.3f (%s) | %.3f (%s) |' % (chosen['worst'], chosen['worst_drive'], last['worst'],
                                                      last['worst_drive'])]
    return '\n'.join(lines)
