"""int8 ONNX: the float ONNX model statically quantized by onnxruntime's own tools (export --onnx F --int8).

Weights are int8 per output channel, activations uint8 with one scale per tensor, their ranges calibrated on
real images (MinMax). The convolutions and what travels between them (ReLU, max pooling) are quantized, except
the first convolution, which sees the pixels; the input's cast and resize, the decoder's upsampling and skip
additions, the softmax and the resizing to the image's size stay float. Measured on the demo's trained model
(39 test images), against the float model: as here, road IoU falls 0.11 points; with the first convolution in
int8 too, 0.97 (convolutions alone); quantizing the upsampling (ConvTranspose) and the additions as well, 1.65.
Whether the result is good enough is decided by the caller, against the float model (evaluation/form_check.py).
"""
import contextlib
import logging

import numpy as np
import onnx
from onnxruntime import quantization

from roadseg.data import images
from roadseg.serving import onnx_model

QUANTIZED_OPS = ('Conv', 'Relu', 'MaxPool')
IMAGE_CHANNELS = 3
# onnxruntime's calibrator keeps every tensor of every image until it reduces them to ranges, about 0.2 GB per
# image for the full VGG16 at 160x576 (config.CALIBRATION_IMAGES caps the images). Its option to reduce every N
# images (CalibMaxIntermediateOutputs) is not used: in onnxruntime 1.32 it drops those N images' tensors instead.


class CalibrationImages(quantization.CalibrationDataReader):
    """The calibration images, one at a time, resized to the network's input size (what the model sees)."""

    def __init__(self, paths, image_shape):
        self.pending = iter(paths)
        self.image_shape = image_shape

    def get_next(self):
        path = next(self.pending, None)
        if path is None:
            return None
        return {onnx_model.INPUT: images.resize_image(images.read_rgb(path), self.image_shape)[np.newaxis]}


@contextlib.contextmanager
def _quiet_quantizer():
    """onnxruntime's quantizer logs advice (pre-processing) on the root logger at WARNING: keep it off the screen."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def pixel_convolutions(float_path):
    """Names of the convolutions whose kernels take the image's channels: the first, which stays float."""
    graph = onnx.load(float_path, load_external_data=False).graph
    kernels = {tensor.name: tensor.dims for tensor in graph.initializer}
    return [node.name for node in graph.node if node.op_type == 'Conv' and len(kernels.get(node.input[1], ())) == 4
            and kernels[node.input[1]][1] == IMAGE_CHANNELS]


def quantize_int8(float_path, int8_path, calibration_paths, image_shape):
    """Write at `int8_path` the QDQ int8 model of the float ONNX model at `float_path`, calibrated on the images
    at `calibration_paths`."""
    with _quiet_quantizer():
        quantization.quantize_static(
            float_path, int8_path, CalibrationImages(calibration_paths, image_shape),
            quant_format=quantization.QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OPS),
            nodes_to_exclude=pixel_convolutions(float_path), per_channel=True,
            activation_type=quantization.QuantType.QUInt8, weight_type=quantization.QuantType.QInt8,
            calibrate_method=quantization.CalibrationMethod.MinMax)
