"""The classic exercise's train_nn: epochs of Adam steps fed from get_batches_fn, a progress bar each, and a
watch that stops a diverging loss before its weights are saved or used."""
import dataclasses
import math
import time
from typing import Callable

import numpy as np
from tqdm import tqdm

from roadseg import process

# A batch whose loss is this many times the running mean of the batches before it, or an epoch whose mean
# loss is this many times the lowest epoch mean so far, has diverged even when it is still finite.
BATCH_EXPLOSION = 100.0


EPOCH_EXPLOSION = 10.0


RUNNING_MEAN_BATCHES = 50


MIN_BATCHES_FOR_EXPLOSION = 10


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


@dataclasses.dataclass
class EpochHooks:
    """What a training run (fit.py) adds around train_nn's epochs: the epoch to go on from, more placeholders'
    values for each epoch's steps, the loss watch carried over from an earlier call, and what to do after each
    epoch (validate and save; the text it returns ends the epoch's line)."""
    start_epoch: int = 0
    feed_of_epoch: Callable[[int], dict] = lambda epoch: {}
    loss_watch: LossWatch = dataclasses.field(default_factory=LossWatch)
    on_epoch_end: Callable[[int, float], str] = lambda epoch, mean_loss: ''


def train_nn(sess, epochs, batch_size, get_batches_fn, train_op, cross_entropy_loss, input_image,
             correct_label, keep_prob, learning_rate, keep_prob_value=0.5, learning_rate_value=1e-4, hooks=None):
    """Train epochs hooks.start_epoch+1 .. epochs; a progress bar per epoch, a summary line after it.

    `learning_rate_value` may be a function of the epoch. Returns the mean loss of every epoch trained.
    Stops with FloatingPointError on a non-finite or exploding loss, before the weights it produced are
    saved or used.
    """
    hooks = hooks or EpochHooks()
    process.check_weights_not_frozen()
    num_images = getattr(get_batches_fn, 'num_images', None)  # the classic test's get_batches_fn has none
    batches_per_epoch = math.ceil(num_images / batch_size) if num_images else None
    rate_of = learning_rate_value if callable(learning_rate_value) else lambda epoch: learning_rate_value
    watch, history = hooks.loss_watch, []
    for epoch in range(hooks.start_epoch + 1, epochs + 1):
        started, total, seen = time.time(), 0.0, 0
        feed = hooks.feed_of_epoch(epoch)
        bar = tqdm(get_batches_fn(batch_size), total=batches_per_epoch, desc='epoch %d/%d' % (epoch, epochs),
                   unit='batch', leave=False)
        for images, labels in bar:
            _, loss = sess.run([train_op, cross_entropy_loss],
                               {input_image: images, correct_label: labels, keep_prob: keep_prob_value,
                                learning_rate: rate_of(epoch), **feed})
            process.settle_malloc()
            watch.check_batch(loss, epoch)
            total, seen = total + loss * len(images), seen + len(images)
            bar.set_postfix(loss='%.4f' % (total / seen))
        if not seen:
            raise ValueError('get_batches_fn(%d) yielded no batches' % batch_size)
        history.append(float(total / seen))
        watch.check_epoch(history[-1], epoch)
        trained = time.time() - started
        report = hooks.on_epoch_end(epoch, history[-1])
        tqdm.write('epoch %d/%d: train loss %.4f over %d images in %.1fs%s'
                   % (epoch, epochs, history[-1], seen, trained, ', ' + report if report else ''))
    return history
