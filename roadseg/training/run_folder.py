"""A training run's folder: its configuration, checkpoints, metrics, TensorBoard events and results.

    runs/<timestamp>/
        run.json                 the RunConfig: settings and the train/validation/test split
        checkpoints/last/        model.ckpt.* + state.json (epoch, its train loss, its validation measures, the best
                                 validation measure so far, the learning-rate share after rewinds), every epoch
        checkpoints/best/        the same, for the epoch with the best validation measure (fit.selection_measure)
        metrics.csv              one row per epoch: loss, learning rate and validation metrics
        tensorboard/             loss, learning rate, IoU, MaxF and overlay images per epoch
        export/                  the chosen checkpoint as an inference SavedModel (serving/inference.py)
        test_metrics.json        that model's measures on the labelled test images, if any
        *.png                    that model's overlays of the test images

Everything is written through roadseg/atomic.py. Reading never changes the folder; one process at a time may
train in it (a lock that the system releases when the process dies, even by kill -9).
"""
import contextlib
import csv
import errno
import fcntl
import io
import json
import os
import shutil

import imageio.v3 as iio

from roadseg import atomic
from roadseg.config import RUN_CONFIG_FILE, RunConfig
from roadseg.errors import RunFolderError
from roadseg.process import graph_mode_tf

tf = graph_mode_tf()

METRICS_FILE = 'metrics.csv'
TEST_METRICS_FILE = 'test_metrics.json'
STATE_FILE = 'state.json'
CHECKPOINT_PREFIX = 'model.ckpt'
LOCK_FILE = '.lock'
CHECKPOINT_NAMES = ('best', 'last')


def _as_os_error(error, where):
    """The OSError behind a TensorFlow write error (a full disk, no permission), or the error itself."""
    for number in (errno.ENOSPC, errno.EROFS, errno.EACCES):
        if os.strerror(number) in error.message:
            return OSError(number, os.strerror(number), where)
    return error


class RunFolder:
    def __init__(self, path):
        self.path = path
        self._writer = None
        self._lock = None

    @classmethod
    def existing(cls, path):
        if not os.path.isfile(os.path.join(path, RUN_CONFIG_FILE)):
            raise RunFolderError('%s is not a run folder (no %s); pass a folder made by python main.py train'
                                 % (path, RUN_CONFIG_FILE))
        return cls(path)

    # ----------------------------------------------------------------- ownership

    @contextlib.contextmanager
    def owned(self):
        """Hold the run for this process during the block; RunFolderError if another process holds it."""
        self._lock_run()
        try:
            yield self
        finally:
            self.close()
            self._unlock_run()

    def _lock_run(self):
        handle = open(os.path.join(self.path, LOCK_FILE), 'a+')
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.close()
            if error.errno in (errno.EAGAIN, errno.EACCES):
                raise RunFolderError('%s is being trained by another process; wait for it to end (or stop it) '
                                     'before resuming or finishing this run' % self.path) from None
            raise
        self._lock = handle
        self.remove_leftovers()

    def remove_if_nothing_trained(self):
        """Remove the folder of a run that stopped before its first checkpoint: a failed start leaves no litter."""
        if self.checkpoint('last') is None:
            shutil.rmtree(self.path, ignore_errors=True)

    def remove_leftovers(self):
        """Remove what writes cut short left behind (only the process holding the lock may)."""
        for parent in (self.path, os.path.join(self.path, 'checkpoints')):
            atomic.remove_leftovers(parent)

    # ----------------------------------------------------------------- configuration

    def write_config(self, config):
        atomic.write_file(os.path.join(self.path, RUN_CONFIG_FILE), config.to_json())

    def read_config(self):
        path = os.path.join(self.path, RUN_CONFIG_FILE)
        with open(path) as f:
            return RunConfig.from_json(f.read(), path)

    # ----------------------------------------------------------------- checkpoints

    def checkpoint_dir(self, name):
        return os.path.join(self.path, 'checkpoints', name)

    def save_checkpoint(self, sess, saver, name, state):
        """Save all variables and `state` (a dict) as checkpoints/<name>, replacing it atomically."""
        with atomic.folder(self.checkpoint_dir(name), replace=True) as staging:
            try:
                saver.save(sess, os.path.join(staging, CHECKPOINT_PREFIX), write_meta_graph=False,
                           write_state=False)
            except tf.errors.OpError as error:  # TensorFlow's writer reports a full disk as its own error
                raise _as_os_error(error, staging) from None
            atomic.write_file(os.path.join(staging, STATE_FILE), json.dumps(state))

    def checkpoint(self, name):
        """(prefix, state) of the complete checkpoint `name`, or None.

        Between save_checkpoint's two renames only the retired copy exists; it is complete and is read
        where it is (a read never renames anything).
        """
        for folder in (self.checkpoint_dir(name), atomic.retired_path(self.checkpoint_dir(name))):
            state_path = os.path.join(folder, STATE_FILE)
            if os.path.isfile(state_path) and os.path.isfile(os.path.join(folder, CHECKPOINT_PREFIX + '.index')):
                try:
                    with open(state_path) as f:
                        return os.path.join(folder, CHECKPOINT_PREFIX), json.load(f)
                except ValueError as error:
                    raise RunFolderError('%s is damaged (%s); delete checkpoints/%s to go on from the other '
                                         'checkpoint' % (state_path, error, name)) from error
        return None

    # ----------------------------------------------------------------- metrics

    def read_metrics(self):
        path = os.path.join(self.path, METRICS_FILE)
        if not os.path.isfile(path):
            return []
        with open(path, newline='') as f:
            return list(csv.DictReader(f))

    def write_metrics(self, rows):
        """Rewrite metrics.csv with `rows` (dicts; the columns are every key any row has)."""
        columns = list(dict.fromkeys(key for row in rows for key in row))
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, restval='')
        writer.writeheader()
        writer.writerows(rows)
        atomic.write_file(os.path.join(self.path, METRICS_FILE), out.getvalue())

    def write_test_metrics(self, results):
        atomic.write_file(os.path.join(self.path, TEST_METRICS_FILE), json.dumps(results, indent=2, sort_keys=True))

    # ----------------------------------------------------------------- TensorBoard

    def write_summaries(self, step, scalars, images=()):
        """Scalars ({tag: value}) and images ([(tag, uint8 HxWx3)]) for TensorBoard at `step`."""
        values = [tf.Summary.Value(tag=tag, simple_value=float(value)) for tag, value in scalars.items()]
        for tag, image in images:
            encoded = iio.imwrite('<bytes>', image, extension='.png')
            values.append(tf.Summary.Value(tag=tag, image=tf.Summary.Image(
                encoded_image_string=encoded, height=image.shape[0], width=image.shape[1], colorspace=3)))
        if self._writer is None:
            self._writer = tf.summary.FileWriter(os.path.join(self.path, 'tensorboard'))
        self._writer.add_summary(tf.Summary(value=values), step)
        self._writer.flush()

    def close(self):
        """Close the TensorBoard writer (the lock stays until unlock)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _unlock_run(self):
        if self._lock is not None:
            self._lock.close()
            self._lock = None
