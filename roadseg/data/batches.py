"""Training batches: decode once, then shuffled, optionally augmented batches from memory, prepared ahead by a
pool of threads (OpenCV and numpy release the GIL for their pixel loops, so the threads use every core)."""
import collections
import concurrent.futures
import dataclasses
import math
import os
from typing import NamedTuple, Optional, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from roadseg import config
from roadseg.data import datasets, images

# Brightness shift, in 0-255 levels, per unit of colour-jitter strength: 0.2 gives the classic +-20.
BRIGHTNESS_LEVELS_PER_STRENGTH = 100.0
# A zoom this close to 1 moves no pixel: the image is left unscaled.
ZOOM_TOLERANCE = 0.01
# Batches are made by one thread per core, at most this many (a GPU box's cores beyond them feed TensorFlow).
MAX_BATCH_THREADS = 16


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """How far a training image may be moved (--zoom, --color-jitter, --cutmix); the defaults are the classic
    ranges, and no CutMix.

    `zoom`: the range of the random scale before the image is cropped (or, below 1, mirror-padded) back to its
    size. `color`: the strength S of the photometric jitter: saturation and contrast x[1-S, 1+S], gamma in
    [e^-S, e^S], brightness +-100*S levels (S = 0.2: the classic brightness and contrast ranges). `cutmix`: the
    share of images that get a box of another training image (jittered on its own) pasted in, its label with it.
    """
    zoom: Tuple[float, float] = config.CLASSIC_ZOOM
    color: float = config.CLASSIC_COLOR_JITTER
    cutmix: float = 0.0


def load_training_pair(image_path, label_path, image_shape, to_onehot=datasets.kitti_label_to_onehot):
    """One decoded, resized (image uint8, one-hot label bool) pair."""
    image, label = images.read_rgb(image_path), images.read_rgb(label_path)
    datasets.check_same_size(image_path, image, label_path, label)
    return images.resize_image(image, image_shape), to_onehot(images.resize_nearest(label, image_shape), label_path)


class Jitter(NamedTuple):
    """One training image's random transform (drawn by draw_jitters)."""
    flip: bool          # mirrored left-right
    zoom: float         # scale before the window is cut (or, below 1, the frame mirror-padded)
    top: float          # where the window sits: a share in [0, 1) of the free rows ...
    left: float         # ... and of the free columns
    saturation: float   # colours this many times as far from their grey
    gamma: float        # levels through x -> x^gamma on [0, 1]
    contrast: float     # levels this many times as far from the image's mean
    brightness: float   # levels added
    paste: Optional['Paste'] = None  # CutMix: a box of another image laid over this one after its own moves

    @property
    def moves_colours(self):
        return (self.saturation, self.gamma, self.contrast, self.brightness) != (1, 1, 1, 0)


class TrainingBatches:
    """`get_batches_fn(batch_size)` over (image, label) path pairs, as the classic train_nn calls it: each call
    yields one epoch of shuffled (images uint8 [B,H,W,3], one-hot labels bool [B,H,W,C]) batches, prepared ahead
    by a pool of `threads` threads (default: one per core, at most MAX_BATCH_THREADS) started once, on the
    first call; with `augment`, jittered within the ranges of `augmentation`.

    Every pair is decoded and resized once, up front. The order and the jitter of the n-th call depend only on
    (seed, first_epoch + n), so a resumed run sees the batches an uninterrupted one would; the threads change
    when a batch is made, never what it holds.
    """

    def __init__(self, pairs, image_shape, seed=0, first_epoch=0, to_onehot=datasets.kitti_label_to_onehot,
                 augment=False, augmentation=Augmentation(), threads=None):
        decoded = [load_training_pair(image, label, image_shape, to_onehot)
                   for image, label in tqdm(pairs, desc='decoding %d images' % len(pairs), unit='img', leave=False)]
        self.images = np.stack([image for image, _ in decoded])
        self.labels = np.stack([class_ids(label) for _, label in decoded])
        self.num_classes = decoded[0][1].shape[-1]
        self.seed, self.epochs_served = seed, first_epoch
        self.augment, self.augmentation = augment, augmentation
        self.threads = threads or default_threads()
        self._pool = None

    @property
    def num_images(self):
        return len(self.images)

    def __call__(self, batch_size):
        if batch_size < 1:
            raise ValueError('batch_size must be >= 1, got %r' % (batch_size,))
        order = np.random.default_rng([self.seed, self.epochs_served]).permutation(self.num_images)
        jitters = [None] * len(order)
        if self.augment:
            jitters = draw_jitters(np.random.default_rng([self.seed, self.epochs_served, 1]), len(order),
                                   self.augmentation)
        self.epochs_served += 1
        return EpochFeed(self, order, jitters, batch_size).batches()

    def rewind_to(self, epoch):
        """The next call serves the batches of epoch `epoch` + 1 again: a rewound run sees those a resumed one would."""
        self.epochs_served = epoch

    @property
    def pool(self):
        """The threads that make the batches, started on the first call and kept for every epoch after it."""
        if self._pool is None:
            cv2.setNumThreads(1)  # the pool is the parallelism: OpenCV's own threads would only contend with it
            self._pool = concurrent.futures.ThreadPoolExecutor(self.threads, thread_name_prefix='training-batches')
        return self._pool

    def fill(self, batch_images, batch_labels, slot, index, jitter):
        """Put image `index`, jittered by `jitter` (None: as it is), and its one-hot label at `slot` of a batch."""
        if jitter is None:
            image, ids = self.images[index], self.labels[index]
        else:
            image, ids = augmented(self.images, self.labels, index, jitter)
        batch_images[slot] = image
        batch_labels[slot] = onehot_batch(ids, self.num_classes)


def default_threads():
    """One thread per core this process may use (a GPU box's many cores make its batches), capped."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_BATCH_THREADS))


class EpochFeed:
    """One epoch's batches, made by the pool of `source` (a TrainingBatches): the first few are asked for at
    once, and each one taken asks for the next, so that about two images per thread are always in the making."""

    def __init__(self, source, order, jitters, batch_size):
        self.source, self.batch_size = source, batch_size
        self.pieces = [(order[start:start + batch_size], jitters[start:start + batch_size])
                       for start in range(0, len(order), batch_size)]
        self.pieces.reverse()  # taken from the end
        self.pending = collections.deque()
        for _ in range(max(2, math.ceil(2 * source.threads / batch_size))):
            self._ask_for_next()

    def _ask_for_next(self):
        if self.pieces:
            indices, jitters = self.pieces.pop()
            self.pending.append(PendingBatch(self.source, indices, jitters))

    def batches(self):
        """The batches in order; those still in the making are cancelled when the consumer stops early."""
        try:
            while self.pending:
                batch = self.pending.popleft()
                self._ask_for_next()
                yield batch.result()
        finally:
            for batch in self.pending:
                batch.cancel()


class PendingBatch:
    """A batch's arrays, one image of it per pool task, each written into its own slot."""

    def __init__(self, source, indices, jitters):
        shape = source.images.shape[1:3]
        self.images = np.empty((len(indices),) + source.images.shape[1:], np.uint8)
        self.labels = np.empty((len(indices),) + shape + (source.num_classes,), bool)
        self.tasks = [source.pool.submit(source.fill, self.images, self.labels, slot, index, jitter)
                      for slot, (index, jitter) in enumerate(zip(indices, jitters))]

    def result(self):
        for task in self.tasks:
            task.result()  # a task's error is raised here, in the consumer
        return self.images, self.labels

    def cancel(self):
        for task in self.tasks:
            task.cancel()


def class_ids(onehot):
    """(H, W, C) one-hot -> (H, W) uint8 class ids, C where no class is set: a label held in memory takes one byte
    a pixel instead of C (Cityscapes' 2,975 train labels at 256x512 would take 7.4 GB as 19-class one-hot)."""
    return np.where(onehot.any(axis=-1), onehot.argmax(axis=-1), onehot.shape[-1]).astype(np.uint8)


def onehot_batch(ids, num_classes):
    """class_ids' inverse, for any leading shape: [..., H, W] ids -> [..., H, W, C] bool, id C (not labelled) all
    zero. Each id picks a whole C-byte row of a table in one gather (numpy's fancy indexing of a bool table, one
    byte at a time, was the slowest part of a batch)."""
    table = np.eye(num_classes + 1, num_classes, dtype=bool)
    row_type = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}.get(num_classes, np.dtype('V%d' % num_classes))
    rows = table.view(row_type).reshape(-1)
    return rows.take(ids).view(bool).reshape(ids.shape + (num_classes,))


# --------------------------------------------------------------------------- augmentation

class Paste(NamedTuple):
    """CutMix (Yun et al. 2019), for a segmentation: a box of another image of the same set, moved by its own
    Jitter, replaces that box of the image and of its label. Roads, cars and pavements then turn up where the
    scene's layout would not put them, so the model has to recognise them rather than expect them there."""
    partner: int        # the other image's index in the images the jitters were drawn for
    jitter: Jitter      # the other image's own moves (without a paste of its own)
    side: float         # the box's sides as a share of the image's: sqrt(1 - U(0, 1)), CutMix's area
    top: float          # where the box sits: a share in [0, 1) of the free rows ...
    left: float         # ... and of the free columns


def draw_jitters(rng, count, augmentation=Augmentation()):
    """`count` images' Jitters, all drawn at once from `rng`: a flip half of the time; zoom, window place,
    saturation and contrast uniform in their ranges; gamma e^uniform(-S, S); brightness uniform +-100*S levels;
    then, with CutMix, the pastes (drawn after the rest, so that the rest does not depend on it)."""
    jitters = _draw_moves(rng, count, augmentation)
    if not augmentation.cutmix:
        return jitters
    pasted = rng.random(count) < augmentation.cutmix
    partners = rng.integers(count, size=count)
    partner_jitters = _draw_moves(rng, count, augmentation)
    sides, tops, lefts = np.sqrt(1 - rng.random(count)), rng.random(count), rng.random(count)
    return [jitter._replace(paste=Paste(int(partner), partner_jitter, float(side), float(top), float(left)))
            if paste else jitter
            for jitter, paste, partner, partner_jitter, side, top, left
            in zip(jitters, pasted, partners, partner_jitters, sides, tops, lefts)]


def _draw_moves(rng, count, augmentation):
    strength = augmentation.color

    def spread():
        return rng.uniform(1 - strength, 1 + strength, count)

    columns = (rng.random(count) < 0.5, rng.uniform(*augmentation.zoom, count), rng.random(count), rng.random(count),
               spread(), np.exp(rng.uniform(-strength, strength, count)), spread(),
               rng.uniform(-1, 1, count) * strength * BRIGHTNESS_LEVELS_PER_STRENGTH)
    return [Jitter(bool(flip), *map(float, rest)) for flip, *rest in zip(*columns)]


def augment_batch(rng, batch_images, batch_labels, augmentation=Augmentation()):
    """Random horizontal flip and zoom (labels moved alike), then colour jitter (images only), drawn from `rng`.

    Images uint8 [B, H, W, 3] and labels [B, H, W] (class ids) or [B, H, W, C] (one-hot) come back with the same
    shapes and types.
    """
    moved = [augmented(batch_images, batch_labels, index, jitter)
             for index, jitter in enumerate(draw_jitters(rng, len(batch_images), augmentation))]
    return np.stack([image for image, _ in moved]), np.stack([label for _, label in moved])


def augmented(all_images, all_labels, index, jitter):
    """Image `index` of `all_images` and its label moved by `jitter`, then its paste (if any) laid over both: a
    box of its partner in `all_images`, moved by the partner's own jitter."""
    image, label = augment_pair(all_images[index], all_labels[index], jitter)
    paste = jitter.paste
    if paste is None:
        return image, label
    other, other_label = augment_pair(all_images[paste.partner], all_labels[paste.partner], paste.jitter)
    (top, height), (left, width) = (window(side, 1 / paste.side, share)
                                    for side, share in zip(image.shape[:2], (paste.top, paste.left)))
    image, label = image.copy(), label.copy()  # an unmoved image is the stored one: never written
    image[top:top + height, left:left + width] = other[top:top + height, left:left + width]
    label[top:top + height, left:left + width] = other_label[top:top + height, left:left + width]
    return image, label


def augment_pair(image, label, jitter):
    """One image (uint8 [H, W, 3]) and its label ([H, W] or [H, W, C]) moved alike, then the image's colours
    jittered. The label takes the source pixel nearest to where the image samples, so the two stay aligned."""
    if jitter.zoom >= 1:
        picture, rows, columns = cropped_and_enlarged(image, jitter)
    else:
        picture, rows, columns = shrunk_and_framed(image, jitter)
    if jitter.flip:
        picture, columns = cv2.flip(picture, 1), columns[::-1]
    return jitter_colours(picture, jitter), label.take(rows, axis=0).take(columns, axis=1)


def cropped_and_enlarged(image, jitter):
    """Zoom >= 1: a window 1/zoom of each side (whole pixels), placed at the jitter's shares of the free rows and
    columns, enlarged back to the image's size; and the source rows and columns the label is read from."""
    shape = image.shape[:2]
    if jitter.zoom - 1 <= ZOOM_TOLERANCE:
        return image, np.arange(shape[0]), np.arange(shape[1])
    (top, height), (left, width) = (window(side, jitter.zoom, share)
                                    for side, share in zip(shape, (jitter.top, jitter.left)))
    picture = images.resize_image(image[top:top + height, left:left + width], shape)
    return (picture, top + images.nearest_sources(shape[0], height),
            left + images.nearest_sources(shape[1], width))


def window(side, zoom, share):
    """(start, length) of a window 1/zoom of `side` at `share` of the free positions."""
    length = max(1, int(round(side / zoom)))
    return int(share * (side - length + 1)), length


def shrunk_and_framed(image, jitter):
    """Zoom < 1 (rare): the image shrunk by the zoom, in a frame mirrored about its edges, the window placed at
    the jitter's shares; and the source rows and columns the label is read from."""
    shape = image.shape[:2]
    size = [max(1, int(round(side * jitter.zoom))) for side in shape]
    rows, columns = (window_positions(side, zoomed, int(share * (side - zoomed + 1)))
                     for side, zoomed, share in zip(shape, size, (jitter.top, jitter.left)))
    small = images.resize_image(image, size)
    return (np.ascontiguousarray(small.take(rows, axis=0).take(columns, axis=1)),
            images.nearest_sources(size[0], shape[0])[rows], images.nearest_sources(size[1], shape[1])[columns])


def window_positions(side, zoomed, offset):
    """The positions, in the image shrunk to `zoomed`, of `side` window positions from `offset` in that image
    framed by its mirror about its edges (numpy's 'symmetric' padding)."""
    folded = (np.arange(side) - offset) % (2 * zoomed)
    return np.where(folded < zoomed, folded, 2 * zoomed - 1 - folded)


def jitter_colours(image, jitter):
    """Saturation, gamma, contrast and brightness changed (other light, other cameras): a colour matrix for the
    saturation, then one 256-level table for the rest, built from the image's histogram (the contrast turns about
    the mean level after the gamma). OpenCV rounds and saturates to uint8 at each step."""
    if not jitter.moves_colours:
        return image
    saturated = cv2.transform(image, saturation_matrix(jitter.saturation))
    counts = cv2.calcHist([saturated.reshape(saturated.shape[0], -1)], [0], None, [256], [0, 256]).ravel()
    curve = apply_gamma(np.arange(256.0), jitter.gamma)
    mean = counts @ curve / counts.sum()
    table = np.clip((curve - mean) * jitter.contrast + mean + jitter.brightness, 0, 255).round().astype(np.uint8)
    return cv2.LUT(saturated, table)


def saturation_matrix(factor):
    """The 3x3 RGB -> RGB matrix of `saturate`: each channel `factor` times as far from the mean of the three."""
    return np.full((3, 3), (1 - factor) / 3, np.float32) + np.float32(factor) * np.eye(3, dtype=np.float32)


def saturate(pixels, factor):
    """Colours `factor` times as far from their grey (0: grey, 1: unchanged); float 0-255 in and out. The numpy
    reference of saturation_matrix."""
    grey = pixels.mean(axis=-1, keepdims=True)
    return np.clip(grey + (pixels - grey) * factor, 0, 255)


def apply_gamma(pixels, gamma):
    """0-255 levels through x -> x^gamma on [0, 1]: above 1 darker mid-tones (dusk), below 1 lighter (haze)."""
    return 255 * (pixels / 255) ** gamma
