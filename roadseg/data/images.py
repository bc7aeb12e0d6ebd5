"""Decoding, resizing and painting images (scipy.misc's imread/imresize are gone: imageio decodes, OpenCV resizes)."""
import cv2
import imageio.v3 as iio
import numpy as np

from roadseg.errors import DatasetError

OVERLAY_COLOR = (0, 255, 0)
OVERLAY_ALPHA = 0.5
# Where a road prediction is wrong, for the pictures of the worst images: road found where there is none, and road
# missed, in two colours apart from the overlay's green (and told apart by people who confuse red and green).
FALSE_POSITIVE_COLOR = (255, 140, 0)
FALSE_NEGATIVE_COLOR = (30, 90, 255)
ROAD_THRESHOLD = 0.5


def read_rgb(path):
    """Decode a PNG/JPEG/BMP into an HxWx3 uint8 array, or raise DatasetError naming the file.

    Grey, grey+alpha, RGBA and 16-bit images are accepted; 16-bit values are scaled to 8 bits, not cut.
    """
    try:
        image = iio.imread(path)
    except Exception as error:  # imageio raises many types for corrupt, empty or fake files
        raise DatasetError('cannot read image %s: %s is not a readable PNG, JPEG or BMP file (%s)'
                           % (path, path, type(error).__name__)) from error
    return to_rgb8(image, path)


def to_rgb8(image, path='image'):
    if image.dtype == np.uint16:
        image = np.rint(image / 257.0).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise DatasetError('%s has %s pixels; give an 8- or 16-bit image' % (path, image.dtype))
    if image.ndim == 3 and image.shape[2] == 2:  # grey + alpha
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.ndim != 3 or image.shape[2] < 3:
        raise DatasetError('%s is not an image with colour or grey channels (shape %s)' % (path, image.shape))
    return np.ascontiguousarray(image[:, :, :3])


def nearest_sources(out_size, in_size):
    """For each of `out_size` positions, the index of the `in_size` pixel whose centre is nearest the position's
    half-pixel-centre sample (as tf.image.resize and OpenCV place it): where a label is read, so that it stays on
    the pixels a bilinear image samples."""
    centres = (np.arange(out_size) + 0.5) * (in_size / out_size)
    return np.minimum(np.floor(centres).astype(np.intp), in_size - 1)


def resize_nearest(label, shape):
    """Nearest-neighbour resize: label colours are never blended."""
    height, width = shape
    return label.take(nearest_sources(height, label.shape[0]), axis=0).take(
        nearest_sources(width, label.shape[1]), axis=1)


def resize_image(image, shape):
    """Resize a uint8 RGB image for the network: bilinear at half-pixel centres, as tf.image.resize (no
    antialiasing), in OpenCV's fixed-point SIMD code (about 6x numpy's float version)."""
    height, width = shape
    if image.shape[:2] == (height, width):
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


def class_overlay(image, class_ids, palette):
    """Blend each pixel with its class colour (all-class models)."""
    colours = np.asarray(palette, np.float32)[class_ids]
    return np.rint((1 - OVERLAY_ALPHA) * image + OVERLAY_ALPHA * colours).astype(np.uint8)


def road_overlay(image, road_probability):
    """Paint road pixels (p > 0.5) translucent green on the image."""
    road = road_probability > ROAD_THRESHOLD
    painted = image.astype(np.float32)
    painted[road] = (1 - OVERLAY_ALPHA) * painted[road] + OVERLAY_ALPHA * np.asarray(OVERLAY_COLOR, np.float32)
    return np.rint(painted).astype(np.uint8)


def error_overlay(image, found, road, labelled):
    """Paint correctly found road green, false positives (found, not road) and false negatives (road, not found) in
    their colours, all translucent; pixels that are not labelled keep their colour."""
    painted = image.astype(np.float32)
    for where, colour in ((found & road, OVERLAY_COLOR), (found & ~road, FALSE_POSITIVE_COLOR),
                          (~found & road, FALSE_NEGATIVE_COLOR)):
        where = where & labelled
        painted[where] = (1 - OVERLAY_ALPHA) * painted[where] + OVERLAY_ALPHA * np.asarray(colour, np.float32)
    return np.rint(painted).astype(np.uint8)


def probability_image(probability):
    """A probability map as 8-bit grey (p x 255)."""
    return np.rint(np.clip(probability, 0, 1) * 255).astype(np.uint8)
