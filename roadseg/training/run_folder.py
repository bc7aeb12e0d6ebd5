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
import dataclasses
import errno
import fcntl
import io
import json
import os
import shutil


import imageio.v3 as iio
from google.protobuf import message

from roadseg import atomic, model
from roadseg.config import RUN_CONFIG_FILE, VGG_TAG, VGG_TENSOR_NAMES, RunConfig
from roadseg.data import downloads
from roadseg.errors import RunFolderError
from roadseg.process import graph_mode_tf

tf = graph_mode_tf()

METRICS_FILE = 'metrics.csv'
TEST_METRICS_FILE = 'test_metrics.json'
# The run's pictures: its training curves, and its test PR curves and worst test images (training/curves.py).
PLOTS_FOLDER = 'plots'
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


# --------------------------------------------------------------------------- the run's inputs: its VGG16 and data
#
# run.json keeps the absolute paths of the run's VGG16 and of every image and label it uses, all under its
# data_root. When those folders move, `train --resume` and `finish` take --vgg-dir and --data-dir to point the run
# at the new places (relocated); check_inputs says, before anything is built, which folder is missing and which
# flag points the run at it.

# The run's files a command needs: a resumed run trains, validates and finishes; finish only tests and overlays.
FILES_TO_TRAIN = ('train', 'val', 'test', 'test_images')
FILES_TO_FINISH = ('test', 'test_images')


def command_of(run, command):
    return 'python main.py %s %s' % ('train --resume' if command == 'train' else 'finish', run.path)


def run_files(config, roles=FILES_TO_TRAIN):
    """The paths of the run's images and labels of `roles` (fields of RunConfig), each once, in order."""
    paths = []
    for role in roles:
        for item in getattr(config, role):
            paths.extend([item] if isinstance(item, str) else item)
    return list(dict.fromkeys(paths))


def check_inputs(run, config, command, roles=FILES_TO_TRAIN):
    """RunFolderError unless the run's VGG16 and its data files of `roles` are where run.json says: which folder
    is missing, and the flag of `command` ('train' or 'finish') that points the run at its new place."""
    how = command_of(run, command)
    if not downloads.vgg_is_complete(config.vgg_path):
        state = ('incomplete (no saved_model.pb and variables/)' if os.path.isdir(config.vgg_path)
                 else 'missing (moved or deleted)')
        raise RunFolderError("the run's VGG16 %s is %s; if it has moved, point the run at its new place: %s "
                             '--vgg-dir NEW_VGG_DIR' % (config.vgg_path, state, how))
    problem = vgg_problem(config.vgg_path, run)
    if problem:
        raise RunFolderError("the run's VGG16 %s %s; restore it, or point the run at a copy: %s --vgg-dir VGG_DIR"
                             % (config.vgg_path, problem, how))
    if not os.path.isdir(config.data_root):
        raise RunFolderError("the run's data folder %s is missing (moved or deleted); if it has moved, point the run "
                             'at its new place: %s --data-dir NEW_DATA_DIR' % (config.data_root, how))
    missing = [path for path in run_files(config, roles) if not os.path.isfile(path)]
    if missing:
        raise RunFolderError("%d of the run's %d files are missing from its data folder %s (the first: %s); restore "
                             'them, or point the run at a folder that holds them all: %s --data-dir DATA_DIR'
                             % (len(missing), len(run_files(config, roles)), config.data_root, missing[0], how))


def vgg_problem(vgg_path, run):
    """What keeps the SavedModel at `vgg_path` from being the run's VGG16 (None if nothing), read from its files
    without building a graph: its saved_model.pb parses, has the graph tagged vgg16 with the five tensors, and
    its variables have the names and shapes of those in the run's checkpoint (which restores their values)."""
    try:
        saved = model.read_saved_model(vgg_path)
    except (OSError, message.Error) as error:
        return 'has a damaged saved_model.pb (%s)' % type(error).__name__
    graphs = [graph for graph in saved.meta_graphs if VGG_TAG in graph.meta_info_def.tags]
    if not graphs:
        return 'has no graph tagged %r: it is not a VGG16 encoder' % VGG_TAG
    nodes = {node.name for node in graphs[0].graph_def.node}
    lacking = [name for name in VGG_TENSOR_NAMES if name.split(':')[0] not in nodes]
    if lacking:
        return 'lacks the tensor(s) %s that FCN-8 needs' % ', '.join(lacking)
    try:
        variables = dict(tf.train.list_variables(os.path.join(vgg_path, 'variables', 'variables')))
    except (tf.errors.OpError, ValueError) as error:
        return 'has damaged variables (%s)' % type(error).__name__
    saved_checkpoint = run.checkpoint('last') or run.checkpoint('best')
    if saved_checkpoint is None:
        return None
    trained = dict(tf.train.list_variables(saved_checkpoint[0]))
    for name, shape in sorted(variables.items()):
        if trained.get(name) != shape:
            return ('is not the VGG16 this run was built on: its variable %s is %s, the run\'s %s'
                    % (name, list(shape), list(trained[name]) if name in trained else 'absent'))
    return None


def relocated(run, config, vgg_dir=None, data_dir=None):
    """(config, lines): `config` pointed at its VGG16 in `vgg_dir` and its data in `data_dir` (either may be None),
    and a line per change for the user; RunFolderError when a new place does not hold what the run needs.

    The data folder must hold every file of the run at its path relative to the run's data_root; `data_dir` may be
    that folder or its parent (KITTI's --data-dir holds data_road/). Nothing is written here.
    """
    lines = []
    if vgg_dir is not None and not _same_folder(vgg_dir, config.vgg_path):
        if not downloads.vgg_is_complete(vgg_dir):
            raise RunFolderError('--vgg-dir %s is not a VGG16 SavedModel folder (it needs saved_model.pb and '
                                 'variables/)' % vgg_dir)
        problem = vgg_problem(vgg_dir, run)
        if problem:
            raise RunFolderError('--vgg-dir %s cannot stand in for the run\'s VGG16 %s: it %s'
                                 % (vgg_dir, config.vgg_path, problem))
        lines.append('The run\'s VGG16 is now %s (was %s; recorded in %s)'
                     % (os.path.abspath(vgg_dir), config.vgg_path, RUN_CONFIG_FILE))
        config = dataclasses.replace(config, vgg_path=os.path.abspath(vgg_dir))
    if data_dir is not None and not _same_folder(data_dir, config.data_root):
        root = _new_data_root(run, config, data_dir)
        if root != config.data_root:
            lines.append('The run\'s data folder is now %s (was %s; all %d of its files are there; recorded in %s)'
                         % (root, config.data_root, len(run_files(config)), RUN_CONFIG_FILE))
            config = _moved_data(config, root)
    return config, lines


def _same_folder(a, b):
    return os.path.realpath(a) == os.path.realpath(b)


def _new_data_root(run, config, data_dir):
    """The folder in or at `data_dir` that holds every file of the run at its place relative to data_root."""
    old_root = config.data_root
    relative = []
    for path in run_files(config):
        inside = os.path.relpath(path, old_root)
        if inside == os.pardir or inside.startswith(os.pardir + os.sep) or os.path.isabs(inside):
            raise RunFolderError('%s cannot be pointed at another data folder: its file %s is not under its data '
                                 'folder %s (run.json was edited?)' % (run.path, path, old_root))
        relative.append(inside)
    candidates = list(dict.fromkeys([os.path.abspath(data_dir),
                                     os.path.join(os.path.abspath(data_dir), os.path.basename(old_root))]))
    misses = []
    for root in candidates:
        missing = [inside for inside in relative if not os.path.isfile(os.path.join(root, inside))]
        if not missing:
            return root
        misses.append((len(missing), root, missing[0]))
    count, root, first = min(misses)
    raise RunFolderError('--data-dir %s does not hold this run\'s data: %d of its %d files are not in %s (the first: '
                         '%s); pass the folder that took the place of %s' % (data_dir, count, len(relative), root,
                                                                            os.path.join(root, first), old_root))


def _moved_data(config, root):
    def move(path):
        return os.path.join(root, os.path.relpath(path, config.data_root))
    return dataclasses.replace(
        config, data_root=root, train=[tuple(map(move, pair)) for pair in config.train],
        val=[tuple(map(move, pair)) for pair in config.val], test=[tuple(map(move, pair)) for pair in config.test],
        test_images=[move(path) for path in config.test_images])
