"""Training batches: decode once, then shuffled, optionally augmented batches from memory, prepared ahead."""
import queue
import threading

import numpy as np
from tqdm import tqdm

import datasets
import images

AUGMENT_CONTRAST = (0.8, 1.2)
AUGMENT_BRIGHTNESS = 20.0
AUGMENT_MAX_ZOOM = 1.15


def load_training_pair(image_path, label_path, image_shape, to_onehot=datasets.kitti_label_to_onehot):
    """One decoded, resized (image uint8, one-hot label bool) pair."""
    image, label = images.read_rgb(image_path), images.read_rgb(label_path)
    datasets.check_same_size(image_path, image, label_path, label)
    return images.resize_image(image, image_shape), to_onehot(images.resize_nearest(label, image_shape), label_path)


def batch_function(pairs, image_shape, seed=0, first_epoch=0, to_onehot=datasets.kitti_label_to_onehot,
                   augment=False):
    """`get_batches_fn(batch_size)` over (image, label) path pairs; see helper.gen_batch_function.

    The order of the n-th call depends only on (seed, first_epoch + n), so a resumed run sees the batches an
    uninterrupted one would.
    """
    decoded = [load_training_pair(image, label, image_shape, to_onehot)
               for image, label in tqdm(pairs, desc='decoding %d images' % len(pairs), unit='img', leave=False)]
    all_images = np.stack([image for image, _ in decoded])
    all_labels = np.stack([class_ids(label) for _, label in decoded])
    num_classes = decoded[0][1].shape[-1]
    epochs_served = [first_epoch]

    def get_batches_fn(batch_size):
        """Yield shuffled batches of (images uint8 [B,H,W,3], one-hot labels bool [B,H,W,C])."""
        if batch_size < 1:
            raise ValueError('batch_size must be >= 1, got %r' % (batch_size,))
        order = np.random.default_rng([seed, epochs_served[0]]).permutation(len(all_images))
        jitter = np.random.default_rng([seed, epochs_served[0], 1])
        epochs_served[0] += 1

        def batches():
            for start in range(0, len(order), batch_size):
                batch = order[start:start + batch_size]
                batch_images, batch_labels = all_images[batch], all_labels[batch]
                if augment:
                    batch_images, batch_labels = augment_batch(jitter, batch_images, batch_labels)
                yield batch_images, onehot_batch(batch_labels, num_classes)

        return prefetch(batches())

    get_batches_fn.num_images = len(all_images)
    return get_batches_fn


def class_ids(onehot):
    """(H, W, C) one-hot -> (H, W) uint8 class ids, C where no class is set: a label held in memory takes one byte
    a pixel instead of C (Cityscapes' 2,975 train labels at 256x512 would take 7.4 GB as 19-class one-hot)."""
    return np.where(onehot.any(axis=-1), onehot.argmax(axis=-1), onehot.shape[-1]).astype(np.uint8)


def onehot_batch(ids, num_classes):
    """class_ids' inverse for a batch: [B, H, W] ids -> [B, H, W, C] bool, id C (not labelled) all zero."""
    return np.eye(num_classes + 1, num_classes, dtype=bool)[ids]


def augment_batch(rng, batch_images, batch_labels):
    """Random horizontal flip, brightness/contrast and zoom-and-crop, labels transformed alike.

    Images uint8 [B, H, W, 3] and labels [B, H, W] (class ids) or [B, H, W, C] (one-hot) come back with the same
    shapes and types.
    """
    batch_images, batch_labels = batch_images.copy(), batch_labels.copy()
    for i in range(len(batch_images)):
        if rng.random() < 0.5:
            batch_images[i], batch_labels[i] = batch_images[i][:, ::-1], batch_labels[i][:, ::-1]
        zoom = rng.uniform(1.0, AUGMENT_MAX_ZOOM)
        if zoom > 1.01:
            batch_images[i], batch_labels[i] = _zoom_and_crop(rng, batch_images[i], batch_labels[i], zoom)
    contrast = rng.uniform(*AUGMENT_CONTRAST, size=(len(batch_images), 1, 1, 1))
    brightness = rng.uniform(-AUGMENT_BRIGHTNESS, AUGMENT_BRIGHTNESS, size=(len(batch_images), 1, 1, 1))
    mean = batch_images.mean(axis=(1, 2, 3), keepdims=True)
    batch_images = np.clip((batch_images - mean) * contrast + mean + brightness, 0, 255).round().astype(np.uint8)
    return batch_images, batch_labels


def _zoom_and_crop(rng, image, label, zoom):
    height, width = image.shape[:2]
    size = (int(round(height * zoom)), int(round(width * zoom)))
    top, left = rng.integers(0, size[0] - height + 1), rng.integers(0, size[1] - width + 1)
    crop = (slice(top, top + height), slice(left, left + width))
    return images.resize_image(image, size)[crop], images.resize_nearest(label, size)[crop]


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
