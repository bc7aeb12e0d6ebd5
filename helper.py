"""Data and I/O for the FCN-8 road segmenter: downloads, KITTI Road batches, overlays.

Everything that touches files lives here; the model maths lives in main.py.
"""
import glob
import hashlib
import os
import queue
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zipfile

import imageio.v3 as iio
import numpy as np
from tqdm import tqdm

import road_metrics
import vgg_builder

VGG_URL = 'https://s3-us-west-1.amazonaws.com/udacity-selfdrivingcar/vgg.zip'
VGG_FILES = ('saved_model.pb', 'variables/variables.index', 'variables/variables.data-00000-of-00001')
# Keras' own mirror of the ImageNet VGG16 weights (with the top), and its checksum.
KERAS_VGG16_URL = ('https://storage.googleapis.com/tensorflow/keras-applications/vgg16/'
                   'vgg16_weights_tf_dim_ordering_tf_kernels.h5')
# Checksums of the files whose content is known, verified after download.
KNOWN_MD5 = {KERAS_VGG16_URL: '64373286793e3c8b2b4e3219cbf3544b'}
VGG_SOURCES = ('udacity', 'keras')
KITTI_PAGE = 'https://www.cvlibs.net/datasets/kitti/eval_road.php'
KITTI_ARCHIVE = 'data_road.zip'

# KITTI Road label colours. A red channel of 0 marks pixels outside the
# evaluated area, which the KITTI devkit ignores ("don't care").
ROAD_COLOR = (255, 0, 255)
NOT_ROAD_COLOR = (255, 0, 0)
OVERLAY_COLOR = (0, 255, 0)
OVERLAY_ALPHA = 0.5
ROAD_THRESHOLD = 0.5


class DatasetError(RuntimeError):
    """The dataset on disk is missing, incomplete or unreadable."""


class DownloadError(RuntimeError):
    """A file could not be downloaded; the message says how to get it by hand."""


# --------------------------------------------------------------------------- downloads

def download_file(url, destination, description=None):
    """Download `url` to `destination` with a progress bar; atomic (temp file + rename).

    A file listed in KNOWN_MD5 whose checksum differs is refused (DownloadError).
    """
    directory = os.path.dirname(os.path.abspath(destination))
    os.makedirs(directory, exist_ok=True)
    fd, partial = readable_temporary_file(directory, '.part')
    try:
        checksum = hashlib.md5()
        with os.fdopen(fd, 'wb') as out, urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get('Content-Length') or 0) or None
            with tqdm(total=total, unit='B', unit_scale=True, desc=description or os.path.basename(url)) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b''):
                    out.write(chunk)
                    checksum.update(chunk)
                    bar.update(len(chunk))
        expected = KNOWN_MD5.get(url)
        if expected and checksum.hexdigest() != expected:
            raise DownloadError('%s arrived corrupt (md5 %s, expected %s); try again'
                                % (url, checksum.hexdigest(), expected))
        os.replace(partial, destination)
    except (urllib.error.URLError, OSError) as error:
        reason = error if isinstance(error, urllib.error.HTTPError) else getattr(error, 'reason', error)
        raise DownloadError('could not download %s: %s' % (url, reason)) from error
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return destination


def download_and_unpack(url, data_dir, expected_folder, description=None):
    """Download a zip archive and unpack it so that `data_dir/expected_folder` appears.

    The archive is unpacked into a temporary folder inside `data_dir` and the
    expected folder is moved into place only when everything is there.
    """
    os.makedirs(data_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix='.unpack-', dir=data_dir)
    try:
        archive = download_file(url, os.path.join(staging, 'archive.zip'), description)
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(staging)
        except zipfile.BadZipFile as error:
            raise DownloadError('%s is not a valid zip archive (%s)' % (url, error)) from error
        unpacked = os.path.join(staging, expected_folder)
        if not os.path.isdir(unpacked):
            raise DownloadError('the archive from %s has no folder %r' % (url, expected_folder))
        target = os.path.join(data_dir, expected_folder)
        os.rename(unpacked, target)
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def vgg_is_complete(vgg_path):
    return all(os.path.isfile(os.path.join(vgg_path, name)) for name in VGG_FILES)


def maybe_download_pretrained_vgg(data_dir, url=VGG_URL):
    """Download and extract the pretrained VGG16 SavedModel to `data_dir/vgg` if it is absent."""
    vgg_path = os.path.join(data_dir, 'vgg')
    if vgg_is_complete(vgg_path):
        return vgg_path
    if os.path.exists(vgg_path):
        raise DatasetError('%s exists but is incomplete (needs %s); delete it and run again to download a fresh copy'
                           % (vgg_path, ', '.join(VGG_FILES)))
    try:
        return download_and_unpack(url, data_dir, 'vgg', 'vgg.zip')
    except DownloadError as error:
        raise DownloadError('%s\nGet the pretrained VGG16 by hand: download %s on a connected machine and unzip it '
                            'into %s so that %s exists.'
                            % (error, url, data_dir, os.path.join(vgg_path, 'saved_model.pb'))) from error


def keras_weights_path(url=KERAS_VGG16_URL):
    """Where Keras caches downloaded weights ($KERAS_HOME/models, default ~/.keras/models)."""
    keras_home = os.environ.get('KERAS_HOME', os.path.join(os.path.expanduser('~'), '.keras'))
    return os.path.join(keras_home, 'models', os.path.basename(url))


def build_vgg_from_keras(data_dir, url=KERAS_VGG16_URL):
    """Write data_dir/vgg from Keras' ImageNet VGG16 weights, downloading them (528 MB) if not cached."""
    weights = keras_weights_path(url)
    if not os.path.isfile(weights):
        download_file(url, weights, 'VGG16 ImageNet weights (Keras)')
    print('Converting %s into an FCN-ready SavedModel at %s' % (weights, os.path.join(data_dir, 'vgg')))
    return vgg_builder.write_keras_vgg16(os.path.join(data_dir, 'vgg'), weights)


def ensure_vgg(data_dir, source='udacity', udacity_url=VGG_URL, keras_url=KERAS_VGG16_URL):
    """Return data_dir/vgg, getting it from `source` if absent.

    'udacity' downloads the classic vgg.zip and falls back to Keras' ImageNet
    weights, with a notice, when that download fails; 'keras' goes to Keras
    directly. When nothing can be downloaded, the error names both addresses
    and how to place the files by hand.
    """
    if source not in VGG_SOURCES:
        raise ValueError('unknown VGG source %r; use one of %s' % (source, ', '.join(VGG_SOURCES)))
    vgg_path = os.path.join(data_dir, 'vgg')
    if vgg_is_complete(vgg_path):
        return vgg_path
    failures = []
    if source == 'udacity':
        try:
            return maybe_download_pretrained_vgg(data_dir, udacity_url)
        except DownloadError as error:
            failures.append(str(error).splitlines()[0])
            print('Notice: %s; building the VGG16 from Keras\' ImageNet weights instead.' % failures[0])
    try:
        return build_vgg_from_keras(data_dir, keras_url)
    except DownloadError as error:
        failures.append(str(error))
    raise DownloadError('could not get a pretrained VGG16:\n  %s\nPlace it by hand, on a connected machine:\n'
                        '  either download %s and unzip it into %s (so that %s exists),\n'
                        '  or download %s to %s and run again with --vgg-source keras.'
                        % ('\n  '.join(failures), udacity_url, data_dir, os.path.join(vgg_path, 'saved_model.pb'),
                           keras_url, keras_weights_path(keras_url)))


def kitti_instructions(data_dir):
    return ('KITTI Road is not in %(data)s. To get it:\n'
            '  1. register at %(page)s and ask for the "base kit with: left color images, calibration and '
            'training labels" (%(zip)s, 0.5 GB); the download link is mailed to you;\n'
            '  2. either run  python main.py --kitti-url <that link>  or unzip %(zip)s into %(data)s yourself,\n'
            '     so that %(train)s exists.\n'
            'To try the project without KITTI, run  python main.py demo  (it generates a road dataset).'
            % {'data': data_dir, 'page': KITTI_PAGE, 'zip': KITTI_ARCHIVE,
               'train': os.path.join(data_dir, 'data_road', 'training', 'image_2')})


def maybe_download_kitti(data_dir, url=None):
    """Return `data_dir/data_road`, downloading it from `url` (the link KITTI mails) if absent."""
    data_road = os.path.join(data_dir, 'data_road')
    if os.path.isdir(os.path.join(data_road, 'training', 'image_2')):
        return data_road
    if url is None:
        raise DatasetError(kitti_instructions(data_dir))
    try:
        return download_and_unpack(url, data_dir, 'data_road', KITTI_ARCHIVE)
    except DownloadError as error:
        raise DownloadError('%s\n%s' % (error, kitti_instructions(data_dir))) from error


# --------------------------------------------------------------------------- images

def read_rgb(path):
    """Decode a PNG/JPEG into an HxWx3 uint8 array, or raise DatasetError naming the file."""
    try:
        image = iio.imread(path)
    except Exception as error:  # imageio raises many types for corrupt files
        raise DatasetError('cannot read image %s: %s' % (path, error)) from error
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.ndim != 3 or image.shape[2] < 3:
        raise DatasetError('%s is not an RGB image (shape %s)' % (path, image.shape))
    return np.ascontiguousarray(image[:, :, :3]).astype(np.uint8, copy=False)


def _current_umask():
    umask = os.umask(0)
    os.umask(umask)
    return umask


def readable_temporary_file(directory, suffix=''):
    """(fd, path) of a new temporary file with the permissions a normal file gets (mkstemp's are 0600)."""
    fd, path = tempfile.mkstemp(prefix='.tmp-', suffix=suffix, dir=directory)
    os.chmod(path, 0o666 & ~_current_umask())
    return fd, path


def readable_temporary_dir(parent, prefix):
    """A new temporary folder with the permissions a normal folder gets (mkdtemp's are 0700)."""
    path = tempfile.mkdtemp(prefix=prefix, dir=parent)
    os.chmod(path, 0o777 & ~_current_umask())
    return path


def write_png_atomically(path, image):
    """Write a PNG under a temporary name and rename it, so no half-written file is ever seen."""
    fd, temporary = readable_temporary_file(os.path.dirname(os.path.abspath(path)), '.png')
    os.close(fd)
    try:
        iio.imwrite(temporary, image)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _source_coordinates(out_size, in_size):
    """Half-pixel-centre sample positions, as tf.image.resize and OpenCV use."""
    return (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5


def resize_bilinear(image, shape):
    """Bilinear resize of an HxWxC image to `shape` (H, W); returns float32."""
    height, width = shape
    ys = np.clip(_source_coordinates(height, image.shape[0]), 0, image.shape[0] - 1)
    xs = np.clip(_source_coordinates(width, image.shape[1]), 0, image.shape[1] - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, image.shape[0] - 1), np.minimum(x0 + 1, image.shape[1] - 1)
    wy, wx = (ys - y0)[:, None, None].astype(np.float32), (xs - x0)[None, :, None].astype(np.float32)
    image = image.astype(np.float32, copy=False)
    top = image[y0][:, x0] * (1 - wx) + image[y0][:, x1] * wx
    bottom = image[y1][:, x0] * (1 - wx) + image[y1][:, x1] * wx
    return top * (1 - wy) + bottom * wy


def resize_nearest(label, shape):
    """Nearest-neighbour resize: label colours are never blended."""
    height, width = shape
    ys = np.minimum(np.floor(_source_coordinates(height, label.shape[0]) + 0.5).astype(int), label.shape[0] - 1)
    xs = np.minimum(np.floor(_source_coordinates(width, label.shape[1]) + 0.5).astype(int), label.shape[1] - 1)
    return label[np.maximum(ys, 0)][:, np.maximum(xs, 0)]


def resize_image(image, shape):
    """Resize an RGB image for the network: bilinear, back to uint8."""
    return np.clip(np.rint(resize_bilinear(image, shape)), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- KITTI labels and batches

def kitti_label_to_onehot(label):
    """KITTI colours -> (H, W, 2) one-hot, class 0 = not road, class 1 = road.

    Don't-care pixels (red channel 0) get an all-zero row: they add nothing to
    the loss (see main.optimize), as the devkit leaves them out of the metrics.
    Any other colour that is not road counts as not road.
    """
    road = np.all(label == ROAD_COLOR, axis=-1)
    care = label[..., 0] != 0
    return np.stack([care & ~road, road], axis=-1)


def kitti_road_pairs(data_folder):
    """Sorted (image, road label) path pairs of a KITTI `training` folder.

    Raises DatasetError for a missing or empty folder, an image without its
    road label or a road label without its image. Lane labels are ignored.
    """
    image_dir = os.path.join(data_folder, 'image_2')
    label_dir = os.path.join(data_folder, 'gt_image_2')
    for folder in (image_dir, label_dir):
        if not os.path.isdir(folder):
            raise DatasetError('%s does not exist: %s is not a KITTI Road training folder. %s'
                               % (folder, data_folder, kitti_instructions(os.path.dirname(os.path.dirname(
                                   os.path.abspath(data_folder))))))
    images = {os.path.basename(p): p for p in glob.glob(os.path.join(image_dir, '*.png'))}
    labels = {os.path.basename(p).replace('_road_', '_', 1): p
              for p in glob.glob(os.path.join(label_dir, '*_road_*.png'))}
    return pair_by_name(images, labels, image_dir, label_dir, lambda name: name.replace('_', '_road_', 1))


def pair_by_name(images, labels, image_dir, label_dir, label_name=lambda name: name):
    """Sorted (image, label) pairs from {name: path} maps; DatasetError names the first unmatched file."""
    if not images:
        raise DatasetError('no training images (*.png) in %s' % image_dir)
    missing_labels = sorted(set(images) - set(labels))
    if missing_labels:
        raise DatasetError('image %s has no label %s in %s' % (
            images[missing_labels[0]], label_name(missing_labels[0]), label_dir)
            + (' (and %d more)' % (len(missing_labels) - 1) if len(missing_labels) > 1 else ''))
    orphans = sorted(set(labels) - set(images))
    if orphans:
        raise DatasetError('label %s has no image %s in %s' % (labels[orphans[0]], orphans[0], image_dir)
                           + (' (and %d more)' % (len(orphans) - 1) if len(orphans) > 1 else ''))
    return [(images[name], labels[name]) for name in sorted(images)]


# CamVid in the SegNet layout: train/ + trainannot/, val/ + valannot/, 8-bit class-id labels.
CAMVID_SPLITS = ('train', 'val')
CAMVID_ROAD = 3
CAMVID_UNLABELLED = 11


def is_camvid(root):
    return all(os.path.isdir(os.path.join(root, split + suffix)) for split in CAMVID_SPLITS for suffix in ('', 'annot'))


def camvid_pairs(root, split):
    """Sorted (image, class-id label) pairs of a CamVid split ('train' or 'val')."""
    image_dir, label_dir = os.path.join(root, split), os.path.join(root, split + 'annot')
    for folder in (image_dir, label_dir):
        if not os.path.isdir(folder):
            raise DatasetError('%s does not exist: %s is not a CamVid folder in the SegNet layout (%s)'
                               % (folder, root, ', '.join(s + '/, ' + s + 'annot/' for s in CAMVID_SPLITS)))
    images = {os.path.basename(p): p for p in glob.glob(os.path.join(image_dir, '*.png'))}
    labels = {os.path.basename(p): p for p in glob.glob(os.path.join(label_dir, '*.png'))}
    return pair_by_name(images, labels, image_dir, label_dir)


def camvid_label_to_onehot(label):
    """CamVid class ids (in every channel of a decoded label) -> (H, W, 2): class 1 = road (id 3).

    Unlabelled pixels (id 11) get an all-zero row, like KITTI's don't-care.
    """
    ids = label[..., 0]
    road = ids == CAMVID_ROAD
    return np.stack([(ids != CAMVID_UNLABELLED) & ~road, road], axis=-1)


CAMVID_CLASS_NAMES = ('sky', 'building', 'pole', 'road', 'pavement', 'tree', 'sign', 'fence', 'car', 'pedestrian',
                      'bicyclist')
# The SegNet colours of the CamVid classes, for overlays with all classes.
CAMVID_PALETTE = ((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
                  (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192))


def camvid_all_classes_onehot(label):
    """CamVid class ids -> (H, W, 11) one-hot; unlabelled pixels (id 11) get an all-zero row."""
    return np.eye(len(CAMVID_CLASS_NAMES) + 1, len(CAMVID_CLASS_NAMES), dtype=bool)[label[..., 0]]


# (dataset, classes) -> (label decoder, number of classes, index of the road class)
LABEL_FORMATS = {('kitti', 'road'): (kitti_label_to_onehot, 2, 1),
                 ('camvid', 'road'): (camvid_label_to_onehot, 2, 1),
                 ('camvid', 'all'): (camvid_all_classes_onehot, len(CAMVID_CLASS_NAMES), CAMVID_ROAD)}


def split_pairs(pairs, fraction):
    """Deterministic split into (train, held out), stratified by KITTI category.

    From each category (um, umm, uu), round(fraction * n) images spread evenly
    over its sorted list are held out, so neighbouring video frames do not all
    land on one side.
    """
    by_category = {}
    for pair in sorted(pairs):
        by_category.setdefault(road_metrics.kitti_category(pair[0]), []).append(pair)
    train, held_out = [], []
    for members in by_category.values():
        count = int(round(fraction * len(members)))
        chosen = set(np.linspace(0, len(members) - 1, count).round().astype(int)) if count else set()
        for i, pair in enumerate(members):
            (held_out if i in chosen else train).append(pair)
    return train, held_out


def check_same_size(image_path, image, label_path, label):
    if image.shape[:2] != label.shape[:2]:
        raise DatasetError('label %s is %dx%d but its image %s is %dx%d' % (
            label_path, label.shape[1], label.shape[0], image_path, image.shape[1], image.shape[0]))


def load_training_pair(image_path, label_path, image_shape, label_to_onehot=kitti_label_to_onehot):
    """One decoded, resized (image uint8, one-hot label bool) pair."""
    image, label = read_rgb(image_path), read_rgb(label_path)
    check_same_size(image_path, image, label_path, label)
    return resize_image(image, image_shape), label_to_onehot(resize_nearest(label, image_shape))


def gen_batch_function(data_folder, image_shape, pairs=None, seed=0, first_epoch=0,
                       label_to_onehot=kitti_label_to_onehot, augment=False):
    """Make `get_batches_fn(batch_size)` over a KITTI Road training folder.

    Every image is decoded and resized once, up front; each call of
    `get_batches_fn` then yields shuffled (images uint8 [B,H,W,3], labels bool
    [B,H,W,2]) batches from memory. `pairs` restricts it to some
    (image, label) paths of the folder (e.g. a training split). The order of
    the n-th call depends only on (seed, first_epoch + n), so a resumed run
    sees the batches an uninterrupted one would. `label_to_onehot` decodes
    another dataset's labels (e.g. camvid_label_to_onehot). With `augment`
    every batch is jittered (augment_batch). A background thread prepares the
    next batches while the current one trains.
    """
    pairs = kitti_road_pairs(data_folder) if pairs is None else list(pairs)
    decoded = [load_training_pair(image, label, image_shape, label_to_onehot)
               for image, label in tqdm(pairs, desc='decoding %d images' % len(pairs), unit='img', leave=False)]
    images = np.stack([image for image, _ in decoded])
    labels = np.stack([label for _, label in decoded])
    epochs_served = [first_epoch]

    def get_batches_fn(batch_size):
        """Yield shuffled batches of (images, one-hot labels)."""
        if batch_size < 1:
            raise ValueError('batch_size must be >= 1, got %r' % (batch_size,))
        order = np.random.default_rng([seed, epochs_served[0]]).permutation(len(images))
        jitter = np.random.default_rng([seed, epochs_served[0], 1])
        epochs_served[0] += 1

        def batches():
            for start in range(0, len(order), batch_size):
                batch = order[start:start + batch_size]
                yield augment_batch(jitter, images[batch], labels[batch]) if augment else (images[batch],
                                                                                           labels[batch])

        return prefetch(batches())

    get_batches_fn.num_images = len(images)
    return get_batches_fn


AUGMENT_CONTRAST = (0.8, 1.2)
AUGMENT_BRIGHTNESS = 20.0
AUGMENT_MAX_ZOOM = 1.15


def augment_batch(rng, images, labels):
    """Random horizontal flip, brightness/contrast and zoom-and-crop, labels transformed alike.

    Images uint8 [B, H, W, 3] and one-hot labels bool [B, H, W, C] come back
    with the same shapes and types.
    """
    images, labels = images.copy(), labels.copy()
    for i in range(len(images)):
        if rng.random() < 0.5:
            images[i], labels[i] = images[i][:, ::-1], labels[i][:, ::-1]
        zoom = rng.uniform(1.0, AUGMENT_MAX_ZOOM)
        if zoom > 1.01:
            images[i], labels[i] = _zoom_and_crop(rng, images[i], labels[i], zoom)
    contrast = rng.uniform(*AUGMENT_CONTRAST, size=(len(images), 1, 1, 1))
    brightness = rng.uniform(-AUGMENT_BRIGHTNESS, AUGMENT_BRIGHTNESS, size=(len(images), 1, 1, 1))
    mean = images.mean(axis=(1, 2, 3), keepdims=True)
    images = np.clip((images - mean) * contrast + mean + brightness, 0, 255).round().astype(np.uint8)
    return images, labels


def _zoom_and_crop(rng, image, label, zoom):
    height, width = image.shape[:2]
    size = (int(round(height * zoom)), int(round(width * zoom)))
    top, left = rng.integers(0, size[0] - height + 1), rng.integers(0, size[1] - width + 1)
    crop = (slice(top, top + height), slice(left, left + width))
    return resize_image(image, size)[crop], resize_nearest(label, size)[crop]


def prefetch(iterator, depth=2):
    """Iterate `iterator` in a background thread, up to `depth` items ahead (batch preparation
    overlaps the training step; numpy and TensorFlow release the GIL for their heavy work)."""
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


# --------------------------------------------------------------------------- inference and overlays

def probability_graph(logits, image_input, image_shape):
    """Graph ops from `logits` to the class probabilities at any requested size.

    Returns (probabilities [B, h, w, classes], output_size placeholder [2]).
    Built once and run per batch: the softmax and the resize to the original
    size happen in the graph. `logits` may be 4-D or flattened to (B*H*W, classes).
    """
    import tensorflow.compat.v1 as tf
    num_classes = logits.shape[-1]
    batch = tf.shape(image_input)[0]
    scores = tf.reshape(logits, tf.stack([batch, image_shape[0], image_shape[1], num_classes]))
    output_size = tf.placeholder_with_default(tf.constant(image_shape, tf.int32), [2], name='output_size')
    return tf.image.resize(tf.nn.softmax(scores), output_size, method='bilinear'), output_size


class SessionPredictor:
    """Class probabilities, at the images' own size, from a graph being trained.

    One graph call per batch of same-size images; the softmax and the resize
    back happen in the graph, whose ops are built once here.
    """

    def __init__(self, sess, logits, keep_prob, image_input, image_shape, road_class=1):
        self.sess, self.keep_prob, self.image_input, self.image_shape = sess, keep_prob, image_input, image_shape
        self.road_class = road_class
        self.probabilities, self.output_size = probability_graph(logits, image_input, image_shape)

    def __call__(self, images):
        batch = np.stack([resize_image(image, self.image_shape) for image in images])
        return self.sess.run(self.probabilities, {self.image_input: batch, self.keep_prob: 1.0,
                                                  self.output_size: images[0].shape[:2]})


class ExportedModel:
    """An exported inference SavedModel: RGB uint8 of any size in, class probabilities at that size out."""
    TAG = 'serve'
    INPUT = 'image:0'
    OUTPUT = 'probabilities:0'
    ROAD_CLASS = 'road_class:0'

    def __init__(self, export_dir):
        import tensorflow.compat.v1 as tf
        if not os.path.isfile(os.path.join(export_dir, 'saved_model.pb')):
            raise DatasetError('no exported model at %s: pass a run folder made by python main.py train (it holds '
                               'export/) or its export/ folder' % export_dir)
        self.graph = tf.Graph()
        self.sess = tf.Session(graph=self.graph)
        with self.graph.as_default():
            tf.saved_model.loader.load(self.sess, [self.TAG], export_dir)
        self.road_class = int(self.sess.run(self.ROAD_CLASS))

    def __call__(self, images):
        return self.sess.run(self.OUTPUT, {self.INPUT: np.stack(images)})

    def close(self):
        self.sess.close()


def class_overlay(image, class_ids, palette):
    """Blend each pixel with its class colour (CamVid with all classes)."""
    colours = np.asarray(palette, np.float32)[class_ids]
    return np.rint((1 - OVERLAY_ALPHA) * image + OVERLAY_ALPHA * colours).astype(np.uint8)


def overlay(image, probabilities, road_class):
    """Road in green for two classes; every class in its palette colour for CamVid's eleven."""
    if probabilities.shape[-1] == len(CAMVID_CLASS_NAMES):
        return class_overlay(image, probabilities.argmax(axis=-1), CAMVID_PALETTE)
    return road_overlay(image, probabilities[..., road_class])


def road_overlay(image, road_probability):
    """Paint road pixels (p > 0.5) translucent green on the image."""
    road = road_probability > ROAD_THRESHOLD
    overlay = image.astype(np.float32)
    overlay[road] = (1 - OVERLAY_ALPHA) * overlay[road] + OVERLAY_ALPHA * np.asarray(OVERLAY_COLOR, np.float32)
    return np.rint(overlay).astype(np.uint8)


def group_by_size(paths, batch_size, on_unreadable=None):
    """Yield (paths, images) batches whose images share one size.

    Images are read one at a time and held per size only until a batch is
    full, so memory stays at a few batches whatever the folder holds. An
    unreadable image raises DatasetError, or with `on_unreadable` is passed
    to it as (path, error) and skipped.
    """
    pending = {}
    for path in sorted(paths):
        try:
            image = read_rgb(path)
        except DatasetError as error:
            if on_unreadable is None:
                raise
            on_unreadable(path, error)
            continue
        bucket = pending.setdefault(image.shape[:2], [])
        bucket.append((path, image))
        if len(bucket) == batch_size:
            yield _unzip_batch(pending.pop(image.shape[:2]))
    for bucket in pending.values():
        yield _unzip_batch(bucket)


def _unzip_batch(items):
    return [path for path, _ in items], [image for _, image in items]


def predictions(predict, paths, batch_size=8, on_unreadable=None):
    """Yield (path, image, road probability at the image's size) for every image path."""
    for batch_paths, images in group_by_size(paths, batch_size, on_unreadable):
        for path, image, probability in zip(batch_paths, images, predict(images)):
            yield path, image, probability


def gen_test_output(sess, logits, keep_prob, image_pl, data_folder, image_shape, batch_size=8):
    """Yield (file name, overlay at the image's original resolution) for `data_folder/image_2/*.png`."""
    paths = glob.glob(os.path.join(data_folder, 'image_2', '*.png'))
    if not paths:
        raise DatasetError('no test images (*.png) in %s' % os.path.join(data_folder, 'image_2'))
    predict = SessionPredictor(sess, logits, keep_prob, image_pl, image_shape)
    for path, image, probabilities in predictions(predict, paths, batch_size):
        yield os.path.basename(path), road_overlay(image, probabilities[..., predict.road_class])


def evaluate(predict, pairs, batch_size=8, label_to_onehot=kitti_label_to_onehot):
    """Metrics of `predict` on labelled (image, label) pairs: (RoadMetrics, ClassIoU or None).

    Predictions are compared with the labels at the labels' own resolution,
    as the KITTI devkit does; don't-care pixels are left out. The per-class
    IoU is computed when there are more than two classes.
    """
    metrics, class_iou = road_metrics.RoadMetrics(), None
    labels = dict(pairs)
    for path, image, probabilities in tqdm(predictions(predict, labels, batch_size), total=len(labels),
                                           desc='evaluating', unit='img', leave=False):
        if not np.isfinite(probabilities).all():
            raise FloatingPointError('the network gives non-finite probabilities for %s' % path)
        label = read_rgb(labels[path])
        check_same_size(path, image, labels[path], label)
        onehot = label_to_onehot(label)
        labelled = onehot.any(axis=-1)
        metrics.update(np.clip(probabilities[..., predict.road_class], 0.0, 1.0), onehot[..., predict.road_class],
                       labelled, category=road_metrics.kitti_category(path))
        if onehot.shape[-1] > 2:
            class_iou = class_iou or road_metrics.ClassIoU(onehot.shape[-1])
            class_iou.update(probabilities.argmax(axis=-1), onehot.argmax(axis=-1), labelled)
    return metrics, class_iou


IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp')


def expand_image_inputs(inputs):
    """Files, folders (their images, not recursive) and glob patterns -> sorted image paths.

    An input that matches nothing raises DatasetError naming it.
    """
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            found = [os.path.join(item, name) for name in sorted(os.listdir(item))
                     if name.lower().endswith(IMAGE_EXTENSIONS)]
        elif os.path.exists(item):
            found = [item]
        else:
            found = sorted(glob.glob(item))
        if not found:
            raise DatasetError('no images found for %r (give image files, folders or glob patterns)' % item)
        paths.extend(found)
    return sorted(set(paths))


def write_predictions(predict, paths, out_dir, masks=False, on_unreadable=None):
    """Write <name>.png overlays (and <name>_road.png road probabilities) at each image's size; returns the count."""
    written = 0
    results = predictions(predict, paths, on_unreadable=on_unreadable)
    for path, image, probabilities in tqdm(results, total=len(paths), desc='infer', unit='img'):
        stem = os.path.splitext(os.path.basename(path))[0]
        write_png_atomically(os.path.join(out_dir, stem + '.png'), overlay(image, probabilities, predict.road_class))
        if masks:
            road = probabilities[..., predict.road_class]
            mask = np.rint(np.clip(road, 0, 1) * 255).astype(np.uint8)
            write_png_atomically(os.path.join(out_dir, stem + '_road.png'), mask)
        written += 1
    return written


def new_run_dir(runs_dir):
    """Create and return runs_dir/<timestamp> (never reusing an existing folder)."""
    os.makedirs(runs_dir, exist_ok=True)
    stamp = time.strftime('%Y-%m-%d_%H-%M-%S')
    for suffix in [''] + ['-%d' % i for i in range(1, 1000)]:
        path = os.path.join(runs_dir, stamp + suffix)
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            continue
    raise RuntimeError('could not create a new run folder in %s' % runs_dir)


def kitti_test_images(data_road):
    return sorted(glob.glob(os.path.join(data_road, 'testing', 'image_2', '*.png')))


def save_inference_samples(runs_dir, data_dir, sess, image_shape, logits, keep_prob, input_image, output_dir=None):
    """Write overlays of every KITTI test image to runs_dir/<timestamp>/ (or `output_dir`); returns the folder."""
    paths = kitti_test_images(os.path.join(data_dir, 'data_road'))
    if not paths:
        raise DatasetError('no test images (*.png) in %s' % os.path.join(data_dir, 'data_road', 'testing', 'image_2'))
    output_dir = output_dir or new_run_dir(runs_dir)
    predict = SessionPredictor(sess, logits, keep_prob, input_image, image_shape)
    print('Saved %d test overlays to %s' % (write_predictions(predict, paths, output_dir), output_dir))
    return output_dir
