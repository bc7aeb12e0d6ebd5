"""A model exported to ONNX by python main.py export, run with onnxruntime alone: no TensorFlow is imported.

The ONNX graph is the SavedModel's serving signature (see inference.py): input `image` uint8 [B, H, W, 3],
outputs `road_probability` [B, H, W] and `probabilities` [B, H, W, C]; the ModelInfo JSON of what it was
trained on is in the model's metadata_props under MODEL_INFO_KEY.
"""
import os

import numpy as np
import onnxruntime

from roadseg.config import ModelInfo
from roadseg.data import datasets
from roadseg.errors import DatasetError, ModelError

INPUT = 'image'
OUTPUTS = ('probabilities', 'road_probability')
MODEL_INFO_KEY = 'model_info'
# The first of these that this onnxruntime build offers runs the model; the CPU is always there.
PROVIDERS = ('CUDAExecutionProvider', 'CPUExecutionProvider')
ERROR_LOG_LEVEL = 3  # onnxruntime's log severity: errors only


def inference_session(path):
    """An onnxruntime session of the ONNX file at `path`; ModelError if it is missing or does not load."""
    if not os.path.isfile(path):
        raise ModelError('no ONNX model at %s: make one with python main.py export --model RUN --onnx %s'
                         % (path, path))
    options = onnxruntime.SessionOptions()
    options.log_severity_level = ERROR_LOG_LEVEL
    available = onnxruntime.get_available_providers()
    try:
        return onnxruntime.InferenceSession(path, options, providers=[p for p in PROVIDERS if p in available])
    except Exception as error:  # onnxruntime raises its own Fail, InvalidGraph, InvalidProtobuf, ...
        raise ModelError('%s is not an ONNX model onnxruntime %s can run (%s); make one with python main.py export'
                         % (path, onnxruntime.__version__, str(error).strip().splitlines()[0][:200])) from error


class OnnxModel:
    """An exported ONNX model: RGB uint8 images of one size in, class probabilities at that size out.

    The same interface as inference.ExportedModel (info, road_class, palette, __call__, close).
    """

    def __init__(self, path):
        self.session = inference_session(path)
        names = ({i.name for i in self.session.get_inputs()}, {o.name for o in self.session.get_outputs()})
        metadata = self.session.get_modelmeta().custom_metadata_map
        if names != ({INPUT}, set(OUTPUTS)) or MODEL_INFO_KEY not in metadata:
            raise ModelError('%s is an ONNX model but not one made by python main.py export (it needs input %r, '
                             'outputs %s and %r in its metadata); make one with python main.py export --model RUN '
                             '--onnx %s' % (path, INPUT, ', '.join(map(repr, OUTPUTS)), MODEL_INFO_KEY, path))
        try:
            self.info = ModelInfo.from_json(metadata[MODEL_INFO_KEY])
            self.palette = datasets.label_format(self.info.dataset, self.info.classes).palette
        except (ValueError, KeyError, TypeError, DatasetError) as error:  # bad JSON, missing or mistyped fields
            self.session = None
            raise ModelError('%s holds damaged metadata (%r: %s: %s); export it again with python main.py export '
                             '--model RUN --onnx %s' % (path, MODEL_INFO_KEY, type(error).__name__,
                                                        str(error).splitlines()[0][:120] if str(error) else '',
                                                        path)) from error
        self.road_class = self.info.road_class

    def outputs(self, batch):
        """{output name: array} of every output, for a list of same-size uint8 HxWx3 images."""
        return dict(zip(OUTPUTS, self.session.run(list(OUTPUTS), {INPUT: np.stack(batch)})))

    def __call__(self, batch):
        return self.session.run([OUTPUTS[0]], {INPUT: np.stack(batch)})[0]

    def close(self):
        self.session = None
