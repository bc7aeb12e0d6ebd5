"""Running a model over image files and videos: same-size batches, class probabilities at each image's own size,
and the overlays (and road masks) written through the one writer. Training, finish, evaluate and infer all use
it; the model is anything with the predictor interface (SessionPredictor, ExportedModel, OnnxModel).
"""
import importlib
import os

import imageio.v3 as iio
from tqdm import tqdm

from roadseg import atomic
from roadseg.data import images
from roadseg.errors import DatasetError, ModelError
from roadseg.serving import video

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp')
# The names each image format goes by: a file whose content is one of these formats is decoded as that format
# whatever its name (imageio goes by the name: it reads a PNG named .mp4 as a one-frame video).
FORMAT_NAMES = {'.png': ('.png',), '.jpg': ('.jpg', '.jpeg'), '.bmp': ('.bmp',)}


def read_image(path):
    """images.read_rgb, but decoded as the format its first bytes say (PNG, JPEG, BMP) where its name says
    another."""
    kind = video.content_kind(path)
    if kind not in FORMAT_NAMES or path.lower().endswith(FORMAT_NAMES[kind]):
        return images.read_rgb(path)
    try:
        image = iio.imread(path, extension=kind)
    except Exception as error:  # as in images.read_rgb
        raise DatasetError('cannot read image %s: it holds a %s image by its first bytes, which does not decode '
                           '(%s)' % (path, kind[1:].upper(), type(error).__name__)) from error
    return images.to_rgb8(image, path)


def group_by_size(paths, batch_size, on_unreadable=None):
    """Yield (paths, images) batches whose images share one size.

    Images are read one at a time and held per size only until a batch is full, so memory stays at a few
    batches whatever the folder holds. An unreadable image raises DatasetError, or with `on_unreadable` is
    passed to it as (path, error) and skipped.
    """
    pending = {}
    for path in paths:
        try:
            image = read_image(path)
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
    """Yield (path, image, class probabilities at the image's size) for every readable image path."""
    for batch_paths, batch in group_by_size(paths, batch_size, on_unreadable):
        for path, image, probabilities in zip(batch_paths, batch, predict(batch)):
            yield path, image, probabilities


def renderers(predict, masks=False):
    """What each output of an input holds, as render(image, probabilities): its overlay, and with `masks` its
    road probability as 8-bit grey."""
    def road(image, probabilities):
        return images.probability_image(probabilities[..., predict.road_class])

    def painted(image, probabilities):
        return overlay(image, probabilities, predict.road_class, predict.palette)

    return [painted, road] if masks else [painted]


def write_image_predictions(predict, plan, masks=False, on_unreadable=None, also=None):
    """Write each image's overlay (and road probability) at its own size; returns how many were written.

    `also(path, image, probabilities)`, if given, writes what else a caller makes of each prediction."""
    written, renders = 0, renderers(predict, masks)
    results = predictions(predict, sorted(plan), on_unreadable=on_unreadable)
    for path, image, probabilities in tqdm(results, total=len(plan), desc='infer', unit='img', disable=not plan):
        for target, render in zip(plan[path], renders):
            atomic.write_image(target, render(image, probabilities))
        if also is not None:
            also(path, image, probabilities)
        written += 1
    return written


def write_video_predictions(predict, plan, masks=False, on_unreadable=None):
    """Write each video's overlay video (and road probability video); returns how many were written.

    An unreadable video raises DatasetError, or with `on_unreadable` is passed to it as (path, error) and skipped.
    """
    written, renders = 0, renderers(predict, masks)
    for path in sorted(plan):
        try:
            video.write_predictions(predict, path, list(zip(plan[path], renders)))
        except DatasetError as error:
            if on_unreadable is None:
                raise
            on_unreadable(path, error)
            continue
        written += 1
    return written


def overlay(image, probabilities, road_class, palette=None):
    """Road in green for a road model; every class in its palette colour for an all-class model."""
    if probabilities.shape[-1] > 2 and palette:
        return images.class_overlay(image, probabilities.argmax(axis=-1), palette)
    return images.road_overlay(image, probabilities[..., road_class])


TFLITE_EXTENSION = '.tflite'


def is_onnx_model(path):
    """An .onnx name, or any file but a .tflite one: a SavedModel (a run's export/) is always a folder."""
    return path.lower().endswith('.onnx') or (os.path.isfile(path) and not is_tflite_model(path))


def is_tflite_model(path):
    return path.lower().endswith(TFLITE_EXTENSION)


def open_model(path):
    """The trained model at `path`: an ONNX file (onnxruntime only), a .tflite file (TensorFlow's interpreter), or
    a run folder or its export/ (TensorFlow is imported here, only for those two)."""
    if is_onnx_model(path):
        return importlib.import_module('roadseg.serving.onnx_model').OnnxModel(path)
    try:
        inference = importlib.import_module('roadseg.serving.inference')
    except ImportError as error:
        raise ModelError('%s is a TensorFlow model and TensorFlow does not import here (%s); on a machine without '
                         'TensorFlow, run an .onnx model made by python main.py export' % (path, error)) from error
    if is_tflite_model(path):
        return importlib.import_module('roadseg.serving.tflite_model').TfliteModel(path)
    return inference.ExportedModel(path)


