"""TFLite: a run's exported SavedModel converted by TensorFlow's own tf.lite.TFLiteConverter (export --tflite F).

The converter reads the export's serving signature as it is (input `image` uint8 of any size; outputs
`road_probability` and `probabilities`), so the TFLite model resizes and takes the softmax inside, as the
SavedModel does. --tflite-type float32 keeps the weights; float16 stores them in half precision (half the
file; they are computed in float32); int8 quantizes the weights and every activation it can (the logits, the
softmax and the upsampling included), calibrated on real images, and leaves the rest in float. The ModelInfo
JSON is stored in the file's metadata under MODEL_INFO_KEY, as in the ONNX model.

The converter runs eagerly, which this project's graph-mode processes are not: the conversion runs in a
process of its own.

    python -m roadseg.serving.tflite_export convert EXPORT_DIR OUT.tflite TYPE INFO_JSON [CALIBRATION_IMAGE...]
"""
import sys

import numpy as np
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

from roadseg import process
from roadseg.config import ModelInfo
from roadseg.data import images
from roadseg.errors import ModelError
from roadseg.serving.onnx_model import MODEL_INFO_KEY

CONVERT_COMMAND = 'convert'


def _representative_images(paths, image_shape):
    """The int8 calibration set as the converter takes it: one image at a time, at the network's input size."""
    for path in paths:
        yield {'image': images.resize_image(images.read_rgb(path), image_shape)[np.newaxis]}


def convert(export_dir, kind, info, calibration_paths):
    """The TFLite flatbuffer (bytes) of the export's serving signature, of weight type `kind`, with `info`
    in its metadata. Needs eager TensorFlow (see the module's docstring)."""
    converter = tf.lite.TFLiteConverter.from_saved_model(export_dir, signature_keys=['serving_default'])
    if kind != 'float32':
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if kind == 'float16':
        converter.target_spec.supported_types = [tf.float16]
    if kind == 'int8':
        converter.representative_dataset = lambda: _representative_images(calibration_paths, info.image_shape)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    return with_model_info(converter.convert(), info)


def with_model_info(flatbuffer, info):
    """The TFLite model `flatbuffer` (bytes) with the ModelInfo JSON in its metadata under MODEL_INFO_KEY."""
    model = flatbuffer_utils.convert_bytearray_to_object(flatbuffer)
    model.buffers.append(schema.BufferT())
    model.buffers[-1].data = np.frombuffer(info.to_json().encode(), np.uint8)
    metadata = schema.MetadataT()
    metadata.name, metadata.buffer = MODEL_INFO_KEY, len(model.buffers) - 1
    model.metadata = (model.metadata or []) + [metadata]
    return flatbuffer_utils.convert_object_to_bytearray(model)


def convert_apart(export_dir, path, kind, info, calibration_paths=()):
    """convert() in a process of its own, the model written at `path`; ModelError with the converter's last line
    if it fails."""
    finished = process.run_module_apart('roadseg.serving.tflite_export', CONVERT_COMMAND, export_dir, path, kind,
                                        info.to_json(), *calibration_paths, capture_output=True, text=True)
    if finished.returncode < 0:
        raise ModelError('converting %s to TFLite was stopped by signal %d: out of memory?'
                         % (export_dir, -finished.returncode))
    if finished.returncode:
        lines = [line for line in finished.stderr.strip().splitlines() if line.strip()] or ['no message']
        raise ModelError('tf.lite.TFLiteConverter could not convert %s to %s TFLite (%s); nothing was written'
                         % (export_dir, kind, lines[-1].strip()[:300]))


def _convert_command(export_dir, path, kind, info_json, *calibration_paths):
    flatbuffer = convert(export_dir, kind, ModelInfo.from_json(info_json), calibration_paths)
    with open(path, 'wb') as f:  # the parent's staged temporary file: atomic.staged_path renames it
        f.write(flatbuffer)


if __name__ == '__main__' and sys.argv[1:2] == [CONVERT_COMMAND]:
    _convert_command(*sys.argv[2:])
