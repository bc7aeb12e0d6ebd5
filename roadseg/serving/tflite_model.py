"""A model exported to TFLite by python main.py export --tflite, run by the interpreter TensorFlow ships
(tf.lite.Interpreter, with its XNNPACK CPU kernels).

The file holds the export's serving signature (input `image` uint8 [B, H, W, 3] of any size; outputs
`road_probability` and `probabilities` at that size) and the ModelInfo JSON in its metadata (see
tflite_export.py). The interpreter is resized to each new image size, which is cheap when the size repeats, as
in a video.
"""
import mmap
import os
import warnings

import numpy as np
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema

from roadseg.config import ModelInfo
from roadseg.data import datasets
from roadseg.errors import DatasetError, ModelError
from roadseg.serving import inference, onnx_model


def read_model_info(path):
    """The ModelInfo JSON stored in the TFLite file at `path`, or None."""
    with open(path, 'rb') as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        flatbuffer = schema.Model.GetRootAs(data, 0)
        for i in range(flatbuffer.MetadataLength()):
            if flatbuffer.Metadata(i).Name() == onnx_model.MODEL_INFO_KEY.encode():
                return flatbuffer.Buffers(flatbuffer.Metadata(i).Buffer()).DataAsNumpy().tobytes().decode()
    return None


def interpreter(path):
    """tf.lite.Interpreter of the file at `path` on every core; ModelError if it is missing or does not load."""
    if not os.path.isfile(path):
        raise ModelError('no TFLite model at %s: make one with python main.py export --model RUN --tflite %s'
                         % (path, path))
    try:
        with warnings.catch_warnings():  # TensorFlow 2.21 says the interpreter moves to the ai-edge-litert package
            warnings.simplefilter('ignore')
            return tf.lite.Interpreter(model_path=path, num_threads=os.cpu_count())
    except (ValueError, RuntimeError) as error:
        raise ModelError('%s is not a TFLite model TensorFlow %s can run (%s); make one with python main.py export '
                         '--model RUN --tflite %s' % (path, tf.__version__, str(error).strip().splitlines()[0][:200],
                                                      path)) from error


class TfliteModel:
    """An exported TFLite model: RGB uint8 images of one size in, class probabilities at that size out.

    The same interface as inference.ExportedModel and onnx_model.OnnxModel (info, road_class, palette,
    outputs, __call__, close).
    """

    def __init__(self, path):
        self.interpreter = interpreter(path)
        signatures = self.interpreter.get_signature_list()
        expected = {'inputs': [onnx_model.INPUT], 'outputs': sorted(onnx_model.OUTPUTS)}
        if signatures.get(inference.SIGNATURE) != expected:
            raise ModelError('%s is a TFLite model but not one made by python main.py export (it needs the %s '
                             'signature with input %r and outputs %s); make one with python main.py export --model '
                             'RUN --tflite %s' % (path, inference.SIGNATURE, onnx_model.INPUT,
                                                  ', '.join(map(repr, onnx_model.OUTPUTS)), path))
        try:
            self.info = ModelInfo.from_json(read_model_info(path))
            self.palette = datasets.label_format(self.info.dataset, self.info.classes).palette
        except (ValueError, KeyError, TypeError, DatasetError) as error:  # absent, bad JSON, missing fields
            raise ModelError('%s lacks or holds damaged metadata %r (%s); export it again with python main.py export '
                             '--model RUN --tflite %s' % (path, onnx_model.MODEL_INFO_KEY, type(error).__name__,
                                                       path)) from error
        self.road_class = self.info.road_class
        self.runner = self.interpreter.get_signature_runner(inference.SIGNATURE)

    def outputs(self, batch):
        """{output name: array} of every output, for a list of same-size uint8 HxWx3 images."""
        return self.runner(**{onnx_model.INPUT: np.stack(batch)})

    def __call__(self, batch):
        return self.outputs(batch)['probabilities']

    def close(self):
        self.interpreter = self.runner = None
