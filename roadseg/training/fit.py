"""Training a run: train_nn (loop.py) from the run's last checkpoint, and around it validation after every epoch,
the best and last checkpoints, metrics.csv and TensorBoard, and the rewinds after a loss explosion."""
import contextlib
import math
import os
import time

import numpy as np
from tensorflow.core.protobuf.rewriter_config_pb2 import RewriterConfig
from tqdm import tqdm

from roadseg import model
from roadseg.data import batches, datasets
from roadseg.errors import Interrupted, OutOfMemory, TrainingDiverged
from roadseg.evaluation import scoring
from roadseg.process import graph_mode_tf
from roadseg.serving import files, inference
from roadseg.training.loop import EpochHooks, LossWatch, train_nn
from roadseg.training.schedules import LearningRate, adam_epsilon_schedule, late_phase_start
from roadseg.training.weight_average import AVERAGED_EPOCHS, WeightAverage, first_averaged_epoch

tf = graph_mode_tf()

OVERLAYS_PER_EPOCH = 3
# After a loss explosion, train_rewinding goes back to the best checkpoint and on at this share of the rate, at
# most MAX_REWINDS times: the random CamVid encoder's activations can still run away late in long runs
# (docs/experiments.md).
REWIND_RATE_SHARE = 0.5
MAX_REWINDS = 3


def session_config(xla=False, mixed_precision=False):
    """Session options: GPU memory taken as needed (not all at once); XLA; mixed precision as graph rewrites.

    Mixed precision computes in float16 on GPUs and in bfloat16 on oneDNN CPUs; the variables stay float32.
    """
    config = tf.ConfigProto()
    config.gpu_options.allow_growth = True
    if xla:
        config.graph_options.optimizer_options.global_jit_level = tf.OptimizerOptions.ON_1
    if mixed_precision:
        config.graph_options.rewrite_options.auto_mixed_precision = RewriterConfig.ON
        config.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 = RewriterConfig.ON
    return config


def selection_measure(fmt):
    """(key, name) of what validation picks the best checkpoint by: what the dataset's benchmark ranks, mean class
    IoU for a model of all classes (Cityscapes, CamVid), road MaxF for a road model (KITTI)."""
    return ('miou', 'mean class IoU') if fmt.num_classes > 2 else ('maxf', 'road MaxF')


class EpochReporter:
    """After each epoch: validation metrics, metrics.csv, TensorBoard, then the best and last checkpoints."""

    def __init__(self, sess, fcn8, run, config, state, rate, average=None):
        self.sess, self.run, self.config, self.rate_of, self.average = sess, run, config, rate, average
        self.saver = tf.train.Saver(tf.global_variables(), max_to_keep=None)
        self.fmt = datasets.label_format(config.dataset, config.classes)
        self.predict = inference.SessionPredictor(sess, fcn8.logits, fcn8.keep_prob, fcn8.image_input,
                                                  tuple(config.image_shape), self.fmt.road_class, self.fmt.palette,
                                                  config.flip_average, tuple(config.scales))
        self.measure, self.measure_name = selection_measure(self.fmt)
        self.best, self.completed = state.get('best_' + self.measure, -math.inf), state['epoch']
        self.losses, self.rewinds = {}, 0  # mean train loss of each epoch trained here (a rewound one: its redo)
        self.rows = [row for row in run.read_metrics() if int(row['epoch']) <= self.completed]
        # train_nn checks the loss computed before each update: the epoch's last update is checked here.
        self.weights_finite = tf.reduce_all([tf.reduce_all(tf.is_finite(v)) for v in tf.trainable_variables()])

    def __call__(self, epoch, loss):
        if not self.sess.run(self.weights_finite):
            raise FloatingPointError('the weights became non-finite in epoch %d; lower --learning-rate or set '
                                     '--clip-norm' % epoch)
        if self.average and epoch >= first_averaged_epoch(self.config):
            self.average.add_current_weights()
        with self._model_in_network():
            result, overlays = self._validate(), self._overlays()
        improved = not self.config.val or (np.isfinite(result.get(self.measure, np.nan))
                                           and result[self.measure] > self.best)
        if improved and self.config.val:
            self.best = result[self.measure]
        state = {'epoch': epoch, 'best_' + self.measure: float(self.best), 'loss': float(loss),
                 'rate_share': self.rate_of.share,
                 'validation': {key: float(result[key]) for key in ('iou', 'maxf', 'miou') if key in result},
                 AVERAGED_EPOCHS: self.average.epochs_averaged() if self.average else 0}
        # The metrics row before the checkpoints: a kill in between re-trains this epoch and rewrites its row.
        self.rows = [row for row in self.rows if int(row['epoch']) < epoch]
        training_row = {'epoch': epoch, 'train_loss': '%.6f' % loss, 'learning_rate': '%.6g' % self.rate_of(epoch)}
        self.rows.append(dict(training_row, **{'val_' + key: '%.6f' % result[key] for key in
                                               ('iou', 'maxf', 'ap', 'precision', 'recall', 'miou') if key in result}))
        self.run.write_metrics(self.rows)
        self.run.write_summaries(epoch, dict({'train/loss': loss, 'train/learning_rate': self.rate_of(epoch)},
                                             **{'val/' + k: result[k] for k in ('iou', 'maxf', 'miou')
                                                if k in result and np.isfinite(result[k])}),
                                 overlays)
        if improved:  # best before last: a kill in between never leaves a best score without its weights
            self.run.save_checkpoint(self.sess, self.saver, 'best', state)
        self.run.save_checkpoint(self.sess, self.saver, 'last', state)
        self.completed, self.losses[epoch] = epoch, float(loss)
        if not self.config.val:
            return ''
        return 'val road IoU %.3f MaxF %.3f on %d val images%s%s' % (
            result['iou'], result['maxf'], len(self.config.val),
            ', mean class IoU %.3f' % result['miou'] if 'miou' in result else '', ' (best)' if improved else '')

    def rewind(self, checkpoint):
        """Back to `checkpoint` (prefix, state): its weights in the session and, with the lowered rate, in the last
        checkpoint and metrics.csv too, so that a kill from here resumes from here."""
        prefix, state = checkpoint
        model.restore_checkpoint(self.sess, prefix)
        self.completed, self.rewinds = state['epoch'], self.rewinds + 1
        self.losses = {epoch: loss for epoch, loss in self.losses.items() if epoch <= self.completed}
        self.rows = [row for row in self.rows if int(row['epoch']) <= self.completed]
        self.run.write_metrics(self.rows)
        self.run.save_checkpoint(self.sess, self.saver, 'last', dict(state, rate_share=self.rate_of.share))

    def _model_in_network(self):
        """What validation and its overlays see: the model the run exports (with --average-weights, the mean)."""
        return self.average.in_network() if self.average else contextlib.nullcontext()

    def _validate(self):
        if not self.config.val:
            return {}
        metrics, class_iou = scoring.evaluate(self.predict, self.config.val, self.fmt.to_onehot,
                                                 description='validating')
        return dict(metrics.result(), **({'miou': class_iou.mean()} if class_iou else {}))

    def _overlays(self):
        paths = [image for image, _ in self.config.val[:OVERLAYS_PER_EPOCH]]
        return [('val/%s' % os.path.basename(path),
                 files.overlay(image, probabilities, self.fmt.road_class, self.fmt.palette))
                for path, image, probabilities in files.predictions(self.predict, paths)]


def check_run_data(config):
    """Decode every validation and test label before training; returns warnings to print."""
    fmt = datasets.label_format(config.dataset, config.classes)
    warnings = [datasets.check_labels(config.val, fmt, 'validation'), datasets.check_labels(config.test, fmt, 'test')]
    return [warning for warning in warnings if warning]


def fit(run, config):
    """Train the run from its last checkpoint (if any) to config.epochs; returns the epoch losses trained.

    Ctrl-C keeps the last checkpoint (the end of the last completed epoch, so that a resume is exact) and
    stops with Interrupted; a diverging loss stops with TrainingDiverged before its weights are saved.
    """
    tf.reset_default_graph()
    tf.set_random_seed(config.seed)
    fmt = datasets.label_format(config.dataset, config.classes)
    with tf.Session(config=session_config(config.xla, config.mixed_precision)) as sess:
        fcn8 = model.build_fcn8(sess, config.vgg_path, fmt.num_classes, tuple(config.skip_scales),
                                config.freeze_encoder, config.mixed_precision, config.clip_norm or None,
                                config.label_smoothing, config.lovasz_weight)
        average = WeightAverage(sess, tf.trainable_variables()) if config.average_weights else None
        state = {'epoch': 0}
        saved = run.checkpoint('last')
        if saved:
            model.restore_checkpoint(sess, saved[0])
            state = saved[1]
            print('Resuming %s after epoch %d of %d' % (run.path, state['epoch'], config.epochs))
        if config.late_adam_epsilon:
            print("Adam's epsilon: %g, then %g from epoch %d on (--late-adam-epsilon)"
                  % (config.adam_epsilon, config.late_adam_epsilon, late_phase_start(config)))
        if average:
            print('The model: the mean of the weights at the end of epochs %d-%d (--average-weights)'
                  % (first_averaged_epoch(config), config.epochs))
        get_batches_fn = batches.TrainingBatches(config.train, tuple(config.image_shape), seed=config.seed,
                                                 first_epoch=state['epoch'], to_onehot=fmt.to_onehot,
                                                 augment=config.augment,
                                                 augmentation=batches.Augmentation(tuple(config.zoom),
                                                                                   config.color_jitter,
                                                                                   config.cutmix))
        rate = LearningRate(config, state.get('rate_share', 1.0))
        reporter = EpochReporter(sess, fcn8, run, config, state, rate, average)
        started = time.time()
        try:
            train_rewinding(sess, fcn8, run, config, get_batches_fn, reporter)
        except KeyboardInterrupt:
            raise Interrupted('interrupted in epoch %d: checkpoints/last holds epoch %d, the last one completed; '
                              'python main.py train --resume %s continues exactly from there'
                              % (reporter.completed + 1, reporter.completed, run.path)) from None
        except FloatingPointError as error:
            raise TrainingDiverged('%s. Epoch %d was the last completed one' % (error, reporter.completed)) from error
        except tf.errors.ResourceExhaustedError:
            raise OutOfMemory(
                'out of memory in epoch %d at --batch-size %d, --image-shape %d %d. Lower --batch-size or '
                '--image-shape, or switch on --freeze-encoder or --mixed-precision; the checkpoints saved so far '
                'stay usable: python main.py train --resume %s --batch-size %d'
                % (reporter.completed + 1, config.batch_size, config.image_shape[0], config.image_shape[1],
                   run.path, max(1, config.batch_size // 2))) from None
        finally:
            run.close()
    trained = sorted(reporter.losses)  # after a rewind to before this process began: from the best epoch on
    history = [reporter.losses[epoch] for epoch in trained]
    if history:
        best = ('best validation %s %.3f' % (reporter.measure_name, reporter.best) if config.val
                else 'no validation set: the last epoch is the model')
        print('Trained epochs %d-%d on %d train images in %.0fs: train loss %.4f -> %.4f; %s%s'
              % (trained[0], trained[-1], len(config.train), time.time() - started, history[0],
                 history[-1], best, '; learning rate x%g after %d rewind(s)' % (reporter.rate_of.share,
                                                                              reporter.rewinds)
                 if reporter.rewinds else ''))
    return history


def train_rewinding(sess, fcn8, run, config, get_batches_fn, reporter):
    """train_nn from the last completed epoch to config.epochs. When the loss explodes, go back to the best
    checkpoint (the epochs just before an explosion are often already unstable) and on at REWIND_RATE_SHARE of
    the rate, as one would by hand; after MAX_REWINDS of them, or with no checkpoint yet, the error stands.
    The epochs kept, and their losses, are the reporter's."""
    watch = LossWatch(min([float(row['train_loss']) for row in reporter.rows], default=math.inf))
    epsilon_of = adam_epsilon_schedule(config)
    while True:
        try:
            hooks = EpochHooks(reporter.completed, lambda epoch: {fcn8.adam_epsilon: epsilon_of(epoch)}, watch,
                               reporter)
            train_nn(sess, config.epochs, config.batch_size, get_batches_fn, fcn8.train_op, fcn8.loss,
                     fcn8.image_input, fcn8.correct_label, fcn8.keep_prob, fcn8.learning_rate,
                     keep_prob_value=config.keep_prob, learning_rate_value=reporter.rate_of, hooks=hooks)
            return
        except FloatingPointError as error:
            chosen = chosen_checkpoint(run, config)
            if chosen is None or reporter.rewinds == MAX_REWINDS:
                raise FloatingPointError('%s%s' % (error, ' (after %d rewinds)' % reporter.rewinds
                                                   if reporter.rewinds else '')) from error
            reporter.rate_of.share *= REWIND_RATE_SHARE
            reporter.rewind(chosen[1:])
            get_batches_fn.rewind_to(reporter.completed)
            watch.forget_batches()
            tqdm.write('%s. Back to the %s checkpoint (epoch %d), going on at x%g of the learning rate (rewind %d '
                       'of at most %d)' % (str(error).split(';')[0], chosen[0], reporter.completed,
                                           reporter.rate_of.share, reporter.rewinds, MAX_REWINDS))


def chosen_checkpoint(run, config):
    """(name, prefix, state) of the checkpoint that is the run's model: best, else last; None if neither.
    Without validation every epoch is saved as "best", so the model is the last epoch and is named so."""
    for name in ('best', 'last'):
        found = run.checkpoint(name)
        if found:
            return (name if config.val else 'last',) + found
    return None


