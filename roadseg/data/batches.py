"""Training batches: decode once, then shuffled, optionally augmented batches from memory, prepared ahead."""
import dataclasses
import queue
import threading
from typing import Tuple

import numpy as np
from tqdm import tqdm

from roadseg import config
from roadseg.data import datasets, images

# Brightness shift, in 0-255 levels, per unit of colour-jitter strength: 0.2 gives the classic +-20.
BRIGHTNESS_LEVELS_PER_STRENGTH = 100.0


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """How far a training image may be moved (--zoom, --color-jitter); the defaults are the classic ranges.

    `zoom`: the range of the random scale before the image is cropped (or, below 1, mirror-padded) back to its
    size. `color`: the strength S of the photometric jitter: saturation and contrast x[1-S, 1+S], gamma in
    [e^-S, e^S], brightness +-100*S levels (S = 0.2: the classic brightness and contrast ranges).
    """
    zoom: Tuple[float, float] = config.CLASSIC_ZOOM
    color: float = config.CLASSIC_COLOR_JITTER


def load_training_pair(image_path, label_path, image_shape, to_onehot=datasets.kitti_label_to_onehot):
    """One decoded, resized (image uint8, one-hot label bool) pair."""
    image, label = images.read_rgb(image_path), images.read_rgb(label_path)
    datasets.check_same_size(image_path, image, label_path, label)
    return images.resize_image(image, image_shape), to_onehot(images.resize_nearest(label, image_shape), label_path)


class TrainingBatches:
    """`get_batches_fn(batch_size)` over (image, label) path pairs, as the classic train_nn calls it: each call
    yields one epoch of shuffled (images uint8 [B,H,W,3], one-hot labels bool [B,H,W,C]) batches, prepared ahead
    in a background thread; with `augment`, jittered within the ranges of `augmentation`.

    Every pair is decoded and resized once, up front. The order of the n-th call depends only on
    (seed, first_epoch + n), so a resumed run sees the batches an uninterrupted one would.
    """

    def __init__(self, pairs, image_shape, seed=0, first_epoch=0, to_onehot=datasets.kitti_label_to_onehot,
                 augment=False, augmentation=Augmentation()):
        decoded = [load_training_pair(image, label, image_shape, to_onehot)
                   for image, label in tqdm(pairs, desc='decoding %d images' % len(pairs), unit='img', leave=False)]
        self.images = np.stack([image for image, _ in decoded])
        self.labels = np.stack([class_ids(label) for _, label in decoded])
        self.num_classes = decoded[0][1].shape[-1]
        self.seed, self.epochs_served = seed, first_epoch
        self.augment, self.augmentation = augment, augmentation

    @property
    def num_images(self):
        return len(self.images)

    def __call__(self, batch_size):
        if batch_size < 1:
            raise ValueError('batch_size must be >= 1, got %r' % (batch_size,))
        order = np.random.default_rng([self.seed, self.epochs_served]).permutation(self.num_images)
        jitter = np.random.default_rng([self.seed, self.epochs_served, 1])
        self.epochs_served += 1
        return prefetch(self._epoch(order, jitter, batch_size))

    def rewind_to(self, epoch):
        """The next call serves the batches of epoch `epoch` + 1 again: a rewound run sees those a resumed one would."""
        self.epochs_served = epoch

    def _epoch(self, order, jitter, batch_size):
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            batch_images, batch_labels = self.images[batch], self.labels[batch]
            if self.augment:
                batch_images, batch_labels = augment_batch(jitter, batch_images, batch_labels, self.augmentation)
            yield batch_images, onehot_batch(batch_labels, self.num_classes)


def class_ids(onehot):
    """(H, W, C) one-hot -> (H, W) uint8 class ids, C where no class is set: a label held in memory takes one byte
    a pixel instead of C (Cityscapes' 2,975 train labels at 256x512 would take 7.4 GB as 19-class one-hot)."""
    return np.where(onehot.any(axis=-1), onehot.argmax(axis=-1), onehot.shape[-1]).astype(np.uint8)


def onehot_batch(ids, num_classes):
    """class_ids' inverse for a batch: [B, H, W] ids -> [B, H, W, C] bool, id C (not labelled) all zero."""
    return np.eye(num_classes + 1, num_classes, dtype=bool)[ids]


def augment_batch(rng, batch_images, batch_labels, augmentation=Augmentation()):
    """Random horizontal flip and zoom (labels moved alike), then colour jitter (images only).

    Images uint8 [B, H, W, 3] and labels [B, H, W] (class ids) or [B, H, W, C] (one-hot) come back with the same
    shapes and types.
    """
    batch_images, batch_labels = batch_images.copy(), batch_labels.copy()
    for i in range(len(batch_images)):
        if rng.random() < 0.5:
            batch_images[i], batch_labels[i] = batch_images[i][:, ::-1], batch_labels[i][:, ::-1]
        zoom = rng.uniform(*augmentation.zoom)
        if abs(zoom - 1) > 0.01:
            batch_images[i], batch_labels[i] = _zoom(rng, batch_images[i], batch_labels[i], zoom)
    return jitter_colours(rng, batch_images, augmentation.color), batch_labels


def jitter_colours(rng, batch_images, strength):
    """Saturation, gamma, contrast and brightness of each image changed at random: other light, other cameras."""
    shape = (len(batch_images), 1, 1, 1)

    def factors():
        return rng.uniform(1 - strength, 1 + strength, size=shape)

    pixels = saturate(batch_images.astype(np.float32), factors())
    pixels = apply_gamma(pixels, np.exp(rng.uniform(-strength, strength, size=shape)))
    mean = pixels.mean(axis=(1, 2, 3), keepdims=True)
    brightness = rng.uniform(-1, 1, size=shape) * strength * BRIGHTNESS_LEVELS_PER_STRENGTH
    return np.clip((pixels - mean) * factors() + mean + brightness, 0, 255).round().astype(np.uint8)


def saturate(pixels, factor):
    """Colours `factor` times as far from their grey (0: grey, 1: unchanged); float 0-255 in and out."""
    grey = pixels.mean(axis=-1, keepdims=True)
    return np.clip(grey + (pixels - grey) * factor, 0, 255)


def apply_gamma(pixels, gamma):
    """0-255 levels through x -> x^gamma on [0, 1]: above 1 darker mid-tones (dusk), below 1 lighter (haze)."""
    return 255 * (pixels / 255) ** gamma


def _zoom(rng, image, label, zoom):
    """Scale by `zoom`, then a random window of the original size: a crop, or below 1 a frame mirror-padded."""
    height, width = image.shape[:2]
    size = (int(round(height * zoom)), int(round(width * zoom)))
    image, label = images.resize_image(image, size), images.resize_nearest(label, size)
    top, left = rng.integers(0, abs(size[0] - height) + 1), rng.integers(0, abs(size[1] - width) + 1)
    if zoom < 1:
        frame = [(top, height - size[0] - top), (left, width - size[1] - left)]
        return (np.pad(image, frame + [(0, 0)], mode='symmetric'),
                np.pad(label, frame + [(0, 0)] * (label.ndim - 2), mode='symmetric'))
    crop = (slice(top, top + height), slice(left, left + width))
    return image[crop], label[crop]


def prefetch(iterator, depth=2):
    """Iterate `iterator` in a background thread, up to `depth` items ahead (batch preparation overlaps the
    training step; numpy and TensorFlow release the GIL for their heavy work)."""
    items = queue.Queue(maxsize=depth)
    done = object()

    def produce():
        try:
            for item in iterator:
                items.put(item)
        except BaseException as error:  # handed to the consumer, raised there
            items.put(error)
        items.put(done)

    threading.Thread(target=produce, daemon=True).start()
    while True:
        item = items.get()
        if item is done:
            return
        if isinstance(item, BaseException):
            raise item
        yield item
