"""A training run's folder: its settings, checkpoints, metrics CSV and TensorBoard events.

    runs/<timestamp>/
        run.json                 settings and the train/validation split (what --resume needs)
        checkpoints/last/        model.ckpt.* + state.json (epoch, best MaxF), after every epoch
        checkpoints/best/        the same, for the epoch with the best validation MaxF
        metrics.csv              one row per epoch: loss and validation metrics
        tensorboard/             loss, IoU, MaxF and overlay images per epoch
        export/                  inference SavedModel (see main.export_inference_model)
        *.png                    overlays of the test images

Everything is written under a temporary name and renamed into place, so a
crash or a kill never leaves a half-written file where a complete one is
expected.
"""
import csv
import io
import json
import os
import shutil

import imageio.v3 as iio
import tensorflow.compat.v1 as tf

import helper

CONFIG_FILE = 'run.json'
METRICS_FILE = 'metrics.csv'
STATE_FILE = 'state.json'
CHECKPOINT_PREFIX = 'model.ckpt'


class RunFolderError(RuntimeError):
    """A run folder is missing, incomplete or not a run folder."""


def write_file_atomically(path, data):
    """Write bytes or text to `path` via a temporary file and a rename."""
    fd, temporary = helper.readable_temporary_file(os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


class RunFolder:
    def __init__(self, path):
        self.path = path
        self._writer = None

    # ----------------------------------------------------------------- settings

    def write_config(self, config):
        write_file_atomically(os.path.join(self.path, CONFIG_FILE), json.dumps(config, indent=2, sort_keys=True))

    def read_config(self):
        path = os.path.join(self.path, CONFIG_FILE)
        if not os.path.isfile(path):
            raise RunFolderError('%s is not a run folder (no %s); pass a folder made by python main.py train'
                                 % (self.path, CONFIG_FILE))
        with open(path) as f:
            return json.load(f)

    # ----------------------------------------------------------------- checkpoints

    def checkpoint_dir(self, name):
        return os.path.join(self.path, 'checkpoints', name)

    def checkpoint_prefix(self, name):
        return os.path.join(self.checkpoint_dir(name), CHECKPOINT_PREFIX)

    def save_checkpoint(self, sess, saver, name, state):
        """Save all variables and `state` (a dict) as checkpoints/<name>, replacing it atomically."""
        parent = os.path.join(self.path, 'checkpoints')
        os.makedirs(parent, exist_ok=True)
        staging = helper.readable_temporary_dir(parent, '.%s-' % name)
        target, retired = self.checkpoint_dir(name), os.path.join(parent, '.retired-%s' % name)
        try:
            saver.save(sess, os.path.join(staging, CHECKPOINT_PREFIX), write_meta_graph=False,
                       write_state=False)
            with open(os.path.join(staging, STATE_FILE), 'w') as f:
                json.dump(state, f)
            shutil.rmtree(retired, ignore_errors=True)
            if os.path.exists(target):
                os.rename(target, retired)
            os.rename(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)
        return target

    def checkpoint_state(self, name):
        """The state saved with checkpoints/<name>, or None if there is no complete checkpoint.

        A kill between the two renames of save_checkpoint leaves only the
        retired copy: it is complete, so it is put back.
        """
        target = self.checkpoint_dir(name)
        retired = os.path.join(self.path, 'checkpoints', '.retired-%s' % name)
        if not os.path.isdir(target) and os.path.isdir(retired):
            os.rename(retired, target)
        path = os.path.join(target, STATE_FILE)
        if not os.path.isfile(path):
            return None
        with open(path) as f:
            return json.load(f)

    def discard_unfinished_saves(self):
        """Remove what saves killed part-way left in checkpoints/ (staging folders, retired copies).

        Only for the process that is about to train in this run: a live
        training's staging folder looks the same. A retired copy that is the
        only complete one is put back first (see checkpoint_state).
        """
        parent = os.path.join(self.path, 'checkpoints')
        if not os.path.isdir(parent):
            return
        for name in ('last', 'best'):
            self.checkpoint_state(name)
        for entry in os.listdir(parent):
            if entry.startswith('.'):
                shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)

    # ----------------------------------------------------------------- metrics

    def read_metrics(self):
        path = os.path.join(self.path, METRICS_FILE)
        if not os.path.isfile(path):
            return []
        with open(path, newline='') as f:
            return list(csv.DictReader(f))

    def write_metrics(self, rows):
        """Rewrite metrics.csv with `rows` (dicts with the same keys)."""
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        write_file_atomically(os.path.join(self.path, METRICS_FILE), out.getvalue())

    # ----------------------------------------------------------------- TensorBoard

    def _summary_writer(self):
        if self._writer is None:
            self._writer = tf.summary.FileWriter(os.path.join(self.path, 'tensorboard'))
        return self._writer

    def write_summaries(self, step, scalars, images=()):
        """Scalars ({tag: value}) and images ([(tag, uint8 HxWx3)]) for TensorBoard at `step`."""
        values = [tf.Summary.Value(tag=tag, simple_value=float(value)) for tag, value in scalars.items()]
        for tag, image in images:
            encoded = iio.imwrite('<bytes>', image, extension='.png')
            values.append(tf.Summary.Value(tag=tag, image=tf.Summary.Image(
                encoded_image_string=encoded, height=image.shape[0], width=image.shape[1], colorspace=3)))
        writer = self._summary_writer()
        writer.add_summary(tf.Summary(value=values), step)
        writer.flush()

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
