"""Training a run: the classic train_nn loop, and around it validation, checkpoints and the run's results.

A run folder is one model: the export, the overlays and the test measures all come from the checkpoint
validation chose ("best"), or from the last one when there is no validation set.
"""
import math
import os
import time

import numpy as np
from tensorflow.core.protobuf.rewriter_config_pb2 import RewriterConfig
from tqdm import tqdm

import batches
import datasets
import evaluation
import infer_files
import inference
import model
import process_tuning
import run_folder
from config import ModelInfo
from errors import DatasetError, Interrupted, OutOfMemory, TrainingDiverged
from tfv1 import tf

# A batch whose loss is this many times the running mean of the batches before it, or an epoch whose mean
# loss is this many times the lowest epoch mean so far, has diverged even when it is still finite.
BATCH_EXPLOSION = 100.0
EPOCH_EXPLOSION = 10.0
RUNNING_MEAN_BATCHES = 50
MIN_BATCHES_FOR_EXPLOSION = 10
OVERLAYS_PER_EPOCH = 3
# After a loss explosion, train_rewinding goes back to the best checkpoint and on at this share of the rate, at
# most MAX_REWINDS times: the random CamVid encoder's activations can still run away late in long runs (README).
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


class LossWatch:
    """Says when the loss has diverged: not finite, or far above what it has been."""

    def __init__(self, best_epoch_mean=math.inf):
        self.recent, self.best_epoch_mean = [], best_epoch_mean

    def forget_batches(self):
        """Start the batches' running mean afresh (after a rewind: the exploded batches are not the norm)."""
        self.recent = []

    def check_batch(self, loss, epoch):
        if not np.isfinite(loss):
            raise FloatingPointError('the loss became %s in epoch %d; lower --learning-rate or set --clip-norm'
                                     % (loss, epoch))
        if len(self.recent) >= MIN_BATCHES_FOR_EXPLOSION and loss > BATCH_EXPLOSION * np.mean(self.recent):
            raise FloatingPointError('the loss exploded in epoch %d (%.3g, against a running mean of %.3g); lower '
                                     '--learning-rate or set --clip-norm' % (epoch, loss, np.mean(self.recent)))
        self.recent = (self.recent + [float(loss)])[-RUNNING_MEAN_BATCHES:]

    def check_epoch(self, mean_loss, epoch):
        if mean_loss > EPOCH_EXPLOSION * self.best_epoch_mean:
            raise FloatingPointError('the loss exploded in epoch %d (mean %.3g, against %.3g at best); lower '
                                     '--learning-rate or set --clip-norm' % (epoch, mean_loss, self.best_epoch_mean))
        self.best_epoch_mean = min(self.best_epoch_mean, mean_loss)


def train_nn(sess, epochs, batch_size, get_batches_fn, train_op, cross_entropy_loss, input_image,
             correct_label, keep_prob, learning_rate, keep_prob_value=0.5, learning_rate_value=1e-4,
             start_epoch=0, on_epoch_end=None, loss_watch=None, feed_of_epoch=None):
    """Train epochs start_epoch+1 .. epochs; a progress bar per epoch, a summary line after it.

    `on_epoch_end(epoch, mean_loss)` may validate and save; the text it returns ends the epoch's line.
    `learning_rate_value` may be a function of the epoch; `feed_of_epoch(epoch)` gives more placeholders' values
    for the epoch's steps. Returns the mean loss of every epoch trained.
    Stops with FloatingPointError on a non-finite or exploding loss, before the weights it produced are
    saved or used; `loss_watch` (a LossWatch) carries what counts as exploding from an earlier call.
    """
    process_tuning.check_weights_not_frozen()
    num_images = getattr(get_batches_fn, 'num_images', None)  # the classic test's get_batches_fn has none
    batches_per_epoch = math.ceil(num_images / batch_size) if num_images else None
    rate_of = learning_rate_value if callable(learning_rate_value) else lambda epoch: learning_rate_value
    watch, history = loss_watch or LossWatch(), []
    for epoch in range(start_epoch + 1, epochs + 1):
        started, total, seen = time.time(), 0.0, 0
        feed = feed_of_epoch(epoch) if feed_of_epoch else {}
        bar = tqdm(get_batches_fn(batch_size), total=batches_per_epoch, desc='epoch %d/%d' % (epoch, epochs),
                   unit='batch', leave=False)
        for images, labels in bar:
            _, loss = sess.run([train_op, cross_entropy_loss],
                               {input_image: images, correct_label: labels, keep_prob: keep_prob_value,
                                learning_rate: rate_of(epoch), **feed})
            process_tuning.settle_malloc()
            watch.check_batch(loss, epoch)
            total, seen = total + loss * len(images), seen + len(images)
            bar.set_postfix(loss='%.4f' % (total / seen))
        if not seen:
            raise ValueError('get_batches_fn(%d) yielded no batches' % batch_size)
        history.append(float(total / seen))
        watch.check_epoch(history[-1], epoch)
        trained = time.time() - started
        report = on_epoch_end(epoch, history[-1]) if on_epoch_end else ''
        tqdm.write('epoch %d/%d: train loss %.4f over %d images in %.1fs%s'
                   % (epoch, epochs, history[-1], seen, trained, ', ' + report if report else ''))
    return history


def model_info(config):
    fmt = datasets.label_format(config.dataset, config.classes)
    return ModelInfo(config.dataset, config.classes, tuple(fmt.class_names), fmt.road_class,
                     tuple(config.image_shape))


# The cosine schedule ends at this share of the learning rate, not at 0: the last epoch still trains.
FINAL_RATE_SHARE = 0.05


def _cosine(progress):
    """From 1 down to FINAL_RATE_SHARE along half a cosine: large steps early, small ones to settle."""
    return FINAL_RATE_SHARE + (1 - FINAL_RATE_SHARE) * (1 + math.cos(math.pi * progress)) / 2


# --lr-schedule (config.LR_SCHEDULES): the share of the learning rate at `progress`, 0 at the first epoch after
# the warm-up and 1 at the last.
LR_SCHEDULES = {'constant': lambda progress: 1.0, 'cosine': _cosine}


def _progress(config, epoch):
    """How far `epoch` (1-based) is through the epochs after the warm-up: 0 at the first, 1 at the last."""
    return min(1.0, (epoch - config.warmup_epochs - 1) / max(1, config.epochs - config.warmup_epochs - 1))


def learning_rate_schedule(config):
    """The learning rate of each epoch (1-based): a linear warm-up over config.warmup_epochs, then
    config.lr_schedule from config.learning_rate over the remaining epochs of config.epochs."""
    def rate(epoch):
        if epoch <= config.warmup_epochs:
            return config.learning_rate * epoch / (config.warmup_epochs + 1)
        return config.learning_rate * LR_SCHEDULES[config.lr_schedule](_progress(config, epoch))
    return rate


# --late-adam-epsilon takes over at this share of the epochs after the warm-up: for the cosine, where the rate
# has fallen to about half and the loss has settled near its floor.
LATE_PHASE_START = 0.5


def late_phase_start(config):
    """The first epoch of the late phase (config.epochs + 1 for a run too short to have one)."""
    return next((epoch for epoch in range(config.warmup_epochs + 1, config.epochs + 1)
                 if _progress(config, epoch) >= LATE_PHASE_START), config.epochs + 1)


def adam_epsilon_schedule(config):
    """Adam's epsilon of each epoch: config.adam_epsilon, then config.late_adam_epsilon (if set) from the late
    phase on. A large epsilon there turns the steps of weights whose gradients have become tiny into plain
    SGD steps, which stops the slow runaway of a long run's activations (README, "Sixty epochs")."""
    late = late_phase_start(config)
    return lambda epoch: config.late_adam_epsilon if config.late_adam_epsilon and epoch >= late else config.adam_epsilon


class LearningRate:
    """The rate of each epoch: the configured schedule times `share`, which each rewind after an explosion
    lowers (and the run's checkpoints carry, so that a resumed run goes on at the rate it had)."""

    def __init__(self, config, share=1.0):
        self.schedule, self.share = learning_rate_schedule(config), share

    def __call__(self, epoch):
        return self.share * self.schedule(epoch)


def selection_measure(fmt):
    """(key, name) of what validation picks the best checkpoint by: what the dataset's benchmark ranks, mean class
    IoU for a model of all classes (Cityscapes, CamVid), road MaxF for a road model (KITTI)."""
    return ('miou', 'mean class IoU') if fmt.num_classes > 2 else ('maxf', 'road MaxF')


class EpochReporter:
    """After each epoch: validation metrics, metrics.csv, TensorBoard, then the best and last checkpoints."""

    def __init__(self, sess, fcn8, run, config, state, rate):
        self.sess, self.run, self.config, self.rate_of = sess, run, config, rate
        self.saver = tf.train.Saver(tf.global_variables(), max_to_keep=None)
        self.fmt = datasets.label_format(config.dataset, config.classes)
        self.predict = inference.SessionPredictor(sess, fcn8.logits, fcn8.keep_prob, fcn8.image_input,
                                                  tuple(config.image_shape), self.fmt.road_class, self.fmt.palette)
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
        result = self._validate()
        improved = not self.config.val or (np.isfinite(result.get(self.measure, np.nan))
                                           and result[self.measure] > self.best)
        if improved and self.config.val:
            self.best = result[self.measure]
        state = {'epoch': epoch, 'best_' + self.measure: float(self.best), 'loss': float(loss),
                 'rate_share': self.rate_of.share,
                 'validation': {key: float(result[key]) for key in ('iou', 'maxf', 'miou') if key in result}}
        # The metrics row before the checkpoints: a kill in between re-trains this epoch and rewrites its row.
        self.rows = [row for row in self.rows if int(row['epoch']) < epoch]
        training_row = {'epoch': epoch, 'train_loss': '%.6f' % loss, 'learning_rate': '%.6g' % self.rate_of(epoch)}
        self.rows.append(dict(training_row, **{'val_' + key: '%.6f' % result[key] for key in
                                               ('iou', 'maxf', 'ap', 'precision', 'recall', 'miou') if key in result}))
        self.run.write_metrics(self.rows)
        self.run.write_summaries(epoch, dict({'train/loss': loss, 'train/learning_rate': self.rate_of(epoch)},
                                             **{'val/' + k: result[k] for k in ('iou', 'maxf', 'miou')
                                                if k in result and np.isfinite(result[k])}),
                                 self._overlays())
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
        run_folder.restore(self.sess, prefix)
        self.completed, self.rewinds = state['epoch'], self.rewinds + 1
        self.losses = {epoch: loss for epoch, loss in self.losses.items() if epoch <= self.completed}
        self.rows = [row for row in self.rows if int(row['epoch']) <= self.completed]
        self.run.write_metrics(self.rows)
        self.run.save_checkpoint(self.sess, self.saver, 'last', dict(state, rate_share=self.rate_of.share))

    def _validate(self):
        if not self.config.val:
            return {}
        metrics, class_iou = evaluation.evaluate(self.predict, self.config.val, self.fmt.to_onehot,
                                                 description='validating')
        return dict(metrics.result(), **({'miou': class_iou.mean()} if class_iou else {}))

    def _overlays(self):
        paths = [image for image, _ in self.config.val[:OVERLAYS_PER_EPOCH]]
        return [('val/%s' % os.path.basename(path),
                 infer_files.overlay(image, probabilities, self.fmt.road_class, self.fmt.palette))
                for path, image, probabilities in infer_files.predictions(self.predict, paths)]


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
                                config.label_smoothing)
        state = {'epoch': 0}
        saved = run.checkpoint('last')
        if saved:
            run_folder.restore(sess, saved[0])
            state = saved[1]
            print('Resuming %s after epoch %d of %d' % (run.path, state['epoch'], config.epochs))
        if config.late_adam_epsilon:
            print("Adam's epsilon: %g, then %g from epoch %d on (--late-adam-epsilon)"
                  % (config.adam_epsilon, config.late_adam_epsilon, late_phase_start(config)))
        get_batches_fn = batches.batch_function(config.train, tuple(config.image_shape), seed=config.seed,
                                                first_epoch=state['epoch'], to_onehot=fmt.to_onehot,
                                                augment=config.augment,
                                                augmentation=batches.Augmentation(tuple(config.zoom),
                                                                                  config.color_jitter))
        rate = LearningRate(config, state.get('rate_share', 1.0))
        reporter = EpochReporter(sess, fcn8, run, config, state, rate)
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
            train_nn(sess, config.epochs, config.batch_size, get_batches_fn, fcn8.train_op, fcn8.loss,
                     fcn8.image_input, fcn8.correct_label, fcn8.keep_prob, fcn8.learning_rate,
                     keep_prob_value=config.keep_prob, learning_rate_value=reporter.rate_of,
                     start_epoch=reporter.completed, on_epoch_end=reporter, loss_watch=watch,
                     feed_of_epoch=lambda epoch: {fcn8.adam_epsilon: epsilon_of(epoch)})
            return
        except FloatingPointError as error:
            chosen = chosen_checkpoint(run)
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


def chosen_checkpoint(run):
    """(name, prefix, state) of the checkpoint that is the run's model: best, else last; None if neither."""
    for name in ('best', 'last'):
        found = run.checkpoint(name)
        if found:
            return (name,) + found
    return None


def finish_run(run, config):
    """Export the chosen checkpoint, then its test measures and its overlays: one model for all three.

    Returns the test measures ({} without labelled test images).
    """
    chosen = chosen_checkpoint(run)
    if chosen is None:
        raise DatasetError('%s has no checkpoint yet: train at least one epoch (python main.py train --resume %s)'
                           % (run.path, run.path))
    name, prefix, state = chosen
    export_dir = inference.export_inference_model(prefix, os.path.join(run.path, inference.EXPORT_FOLDER),
                                                  config.vgg_path, model_info(config), tuple(config.skip_scales))
    print('Exported the %s checkpoint (epoch %d) to %s' % (name, state['epoch'], export_dir))
    exported = inference.ExportedModel(export_dir)
    try:
        results = _test_measures(exported, config)
        if results:
            run.write_test_metrics(dict(results, checkpoint=name, epoch=state['epoch']))
        written, skipped = _overlays(exported, config.test_images, run.path)
    finally:
        exported.close()
    print('Saved %d overlays of the %s images to %s%s' % (written, overlay_source(config), run.path,
                                                          '; %d unreadable image(s) skipped' % skipped
                                                          if skipped else ''))
    return results


def overlay_source(config):
    """'validation' when the run has no test images and overlays its validation images instead, else 'test'."""
    validation_images = {image for image, _ in config.val}
    return 'validation' if config.test_images and set(config.test_images) <= validation_images else 'test'


def _test_measures(exported, config):
    if not config.test:
        return {}
    fmt = datasets.label_format(config.dataset, config.classes)
    metrics, class_iou = evaluation.evaluate(exported, config.test, fmt.to_onehot, description='testing')
    return dict(metrics.result(), **({'miou': class_iou.mean()} if class_iou else {}))


def _overlays(exported, paths, out_dir):
    """The run's test overlays, named like the images (the classic exercise's runs/<timestamp>/<name>.png)."""
    skipped = []
    plan = {path: [os.path.join(out_dir, os.path.basename(path))] for path in paths}
    written = infer_files.write_image_predictions(exported, plan,
                                                  on_unreadable=lambda path, error: skipped.append(path))
    for path in skipped:
        tqdm.write('skipped unreadable test image %s' % path)
    return written, len(skipped)
