"""python main.py export --model RUN --onnx model.onnx: a run's exported model as ONNX, kept only if it matches.

The export's serving signature, its variables frozen into constants, is converted by tf2onnx (the maintained
converter; this project writes no converter of its own), in a process of its own (see PURE_PYTHON_PROTOBUF).
onnxruntime then runs the file against TensorFlow on a few images at two sizes; a file whose outputs differ by
more than MAX_DIFFERENCE anywhere, or that flips one mask pixel that is not a tie (see TIE_MARGIN), is refused
and nothing is written at the target.

    python -m roadseg.serving.onnx_export convert EXPORT_DIR OUT.onnx OPSET   the conversion alone (convert_apart)
"""
import contextlib
import json
import logging
import os
import sys

import numpy as np
import onnx
import tf2onnx

from roadseg import config, model, process
from roadseg.config import RunConfig
from roadseg.data import images, roadgen
from roadseg.errors import DatasetError, ModelError, UserError
from roadseg.process import graph_mode_tf
from roadseg.serving import inference, onnx_model

tf = graph_mode_tf()

MAX_DIFFERENCE = 1e-4
# The two runtimes round float32 differently by a few 1e-6. A pixel whose TensorFlow road probability is this
# close to the threshold, or whose two likeliest classes are this close, is a tie that rounding decides
# (TensorFlow itself may flip it on another CPU): its flip is counted and shown, not refused (docs/deployment.md,
# "ONNX").
TIE_MARGIN = 1e-5
CHECK_IMAGES = 3
CHECK_SEED = 0
CONVERT_COMMAND = 'convert'
USER_ERROR_STATUS = 2  # the conversion process's exit status for a UserError, whose message is its last line
# protobuf's default implementation (upb) keeps every copy of a message in its arena until the whole message is
# freed, and each pass of tf2onnx's optimizers copies every weight again: the full VGG16 FCN-8 ran out of memory.
# The pure-Python implementation shares the weights' bytes. It must be chosen before protobuf is first
# imported, hence a process of its own.
PURE_PYTHON_PROTOBUF = {'PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION': 'python'}


def serving_signature(export_dir):
    """The export's serving_default SignatureDef, read from its saved_model.pb."""
    for meta_graph in model.read_saved_model(export_dir).meta_graphs:
        if inference.SIGNATURE in meta_graph.signature_def:
            return meta_graph.signature_def[inference.SIGNATURE]
    raise ModelError('%s has no %s signature: it was exported by an older version; re-export it with python '
                     'main.py finish RUN' % (export_dir, inference.SIGNATURE))


def _node(tensor_info):
    return tensor_info.name.split(':')[0]


def frozen_graph_def(sess, signature):
    """The session's graph from the signature's inputs to its outputs, variables turned into constants.

    Inputs that the signature does not name (VGG's keep_prob) become their default values, as a served model
    sees them, so that tf2onnx can fold them away instead of making them ONNX inputs.
    """
    outputs = [_node(tensor) for tensor in signature.outputs.values()]
    graph_def = tf.graph_util.convert_variables_to_constants(sess, sess.graph.as_graph_def(), outputs)
    inputs = {_node(tensor) for tensor in signature.inputs.values()}
    for node in graph_def.node:
        if node.op == 'PlaceholderWithDefault' and node.name not in inputs:
            node.op = 'Identity'
            node.attr['T'].CopyFrom(node.attr['dtype'])
            del node.attr['dtype'], node.attr['shape']
    return graph_def


@contextlib.contextmanager
def tf2onnx_messages():
    """Collect tf2onnx's warnings and errors (tracebacks included) instead of printing them; yields the list."""
    messages = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger('tf2onnx')
    saved_propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = saved_propagate


def convert(export_dir, opset=config.ONNX_OPSET):
    """tf2onnx's ONNX model of the export's serving signature, frozen: tensors named as the signature names them
    (image, probabilities, road_probability), the export's ModelInfo in its metadata_props. Returns (model,
    tf2onnx's warnings and errors). Use convert_apart: see PURE_PYTHON_PROTOBUF."""
    exported = inference.ExportedModel(export_dir)
    try:
        signature = serving_signature(export_dir)
        graph_def, info = frozen_graph_def(exported.sess, signature), exported.info
    finally:
        exported.close()  # the weights are in graph_def now: one copy less during the conversion
    names = dict(signature.inputs.items()) | dict(signature.outputs.items())
    with tf2onnx_messages() as messages:
        onnx_proto, _ = tf2onnx.convert.from_graph_def(
            graph_def, name='fcn8', input_names=[tensor.name for tensor in signature.inputs.values()],
            output_names=[tensor.name for tensor in signature.outputs.values()], opset=opset,
            tensors_to_rename={tensor.name: key for key, tensor in names.items()})
    onnx.helper.set_model_props(onnx_proto, {onnx_model.MODEL_INFO_KEY: info.to_json()})
    return onnx_proto, messages


def convert_apart(export_dir, path, opset=config.ONNX_OPSET):
    """convert() in a process with pure-Python protobuf, the model saved at `path`; returns tf2onnx's messages.

    ModelError with the process's last line if it fails.
    """
    finished = process.run_module_apart('roadseg.serving.onnx_export', CONVERT_COMMAND, export_dir, path, opset,
                                        env=dict(os.environ, **PURE_PYTHON_PROTOBUF), capture_output=True, text=True)
    if finished.returncode < 0:
        raise ModelError('converting %s to ONNX was stopped by signal %d: out of memory? It needs about 8.5 GB for '
                         'the full VGG16' % (export_dir, -finished.returncode))
    last_line = (finished.stderr.strip().splitlines() or ['no message'])[-1]
    if finished.returncode == USER_ERROR_STATUS:
        raise ModelError(last_line)
    if finished.returncode:
        raise ModelError('tf2onnx could not convert %s at opset %d (%s)' % (export_dir, opset, last_line))
    return json.loads(finished.stdout.strip().splitlines()[-1])


def _convert_command(export_dir, path, opset):
    try:
        onnx_proto, messages = convert(export_dir, int(opset))
    except UserError as error:
        print(error, file=sys.stderr)
        sys.exit(USER_ERROR_STATUS)
    onnx.save_model(onnx_proto, path)
    print(json.dumps(messages))


def run_of(model_path, export_dir):
    """The run folder that `model_path` (a run folder or its export/) belongs to, or None."""
    for folder in (model_path, os.path.dirname(os.path.abspath(export_dir))):
        if os.path.isfile(os.path.join(folder, config.RUN_CONFIG_FILE)):
            return folder
    return None


def check_images(run_dir):
    """(up to CHECK_IMAGES images, what they are): the run's test images (else its validation images), or
    generated road scenes where the run has none that read."""
    if run_dir:
        config_path = os.path.join(run_dir, config.RUN_CONFIG_FILE)
        with open(config_path) as f:
            run_config = RunConfig.from_json(f.read(), config_path)
        found = []
        for path in run_config.test_images + [image for image, _ in run_config.val]:
            with contextlib.suppress(DatasetError):
                found.append(images.read_rgb(path))
            if len(found) == CHECK_IMAGES:
                break
        if found:
            return found, 'test/validation images of the run'
    rng = np.random.default_rng(CHECK_SEED)
    return ([roadgen.render_scene(rng)[0] for _ in range(CHECK_IMAGES)],
            'generated road scenes of %dx%d' % roadgen.DEFAULT_IMAGE_SHAPE[::-1])


def check_batches(pictures, image_shape):
    """Each picture alone at its own size, then all of them as one batch at the network's input size."""
    return [[picture] for picture in pictures] + [[images.resize_image(picture, image_shape) for picture in pictures]]


def masks(outputs):
    """(road mask (p > 0.5), most likely class) of one batch's outputs."""
    return outputs['road_probability'] > images.ROAD_THRESHOLD, outputs['probabilities'].argmax(axis=-1)


def ties(outputs):
    """Pixels whose masks rounding decides: road probability, or the two likeliest classes, within TIE_MARGIN."""
    two_likeliest = np.partition(outputs['probabilities'], -2, axis=-1)[..., -2:]
    return (np.abs(outputs['road_probability'] - images.ROAD_THRESHOLD) <= TIE_MARGIN) | \
        (two_likeliest[..., 1] - two_likeliest[..., 0] <= TIE_MARGIN)


def compare(pairs):
    """(largest absolute difference over every output, pixels compared, pixels whose road mask or most likely
    class differ, those of them that are not ties in TensorFlow's outputs) over [(TensorFlow's outputs,
    onnxruntime's)], each {output name: array}."""
    largest, pixels, flipped, decisive = 0.0, 0, 0, 0
    for reference, candidate in pairs:
        for name, expected in reference.items():
            if candidate[name].shape != expected.shape:
                raise ModelError('the ONNX model gives %s of shape %s where TensorFlow gives %s; nothing was '
                                 'written' % (name, candidate[name].shape, expected.shape))
            difference = np.nan_to_num(np.abs(candidate[name] - expected), nan=np.inf)  # NaN: as far as can be
            largest = max(largest, float(np.max(difference)))
        (road, classes), (other_road, other_classes) = masks(reference), masks(candidate)
        differs = (road != other_road) | (classes != other_classes)
        pixels, flipped = pixels + differs.size, flipped + int(differs.sum())
        decisive += int((differs & ~ties(reference)).sum())
    return largest, pixels, flipped, decisive


def refusal(largest, decisive, messages):
    """Why the ONNX model may not be kept, or None if it may."""
    if largest <= MAX_DIFFERENCE and not decisive:
        return None
    hint = ' tf2onnx said: %s.' % messages[0].splitlines()[0] if messages else ''
    return ('onnxruntime differs from TensorFlow by up to %.3g (the limit is %g) and flips %d mask pixel(s) that '
            'are not ties; the ONNX model was not kept.%s Try another --opset' % (largest, MAX_DIFFERENCE, decisive,
                                                                                hint))


def tensorflow_outputs(sess, signature, batch):
    """{output name: array} of the SavedModel, run by its signature."""
    fetches = {key: tensor.name for key, tensor in signature.outputs.items()}
    return sess.run(fetches, {signature.inputs[onnx_model.INPUT].name: np.stack(batch)})


def check_against_tensorflow(path, exported, signature, batches, messages):
    """compare() the ONNX file at `path` with the SavedModel on `batches`; ModelError if onnxruntime cannot run it."""
    try:
        candidate = onnx_model.OnnxModel(path)
    except ModelError as error:
        hint = ' (tf2onnx said: %s)' % messages[0].splitlines()[0] if messages else ''
        raise ModelError('tf2onnx made a model that onnxruntime cannot run%s; nothing was written. Try another '
                         '--opset' % hint) from error
    try:
        return compare([(tensorflow_outputs(exported.sess, signature, batch), candidate.outputs(batch))
                        for batch in batches])
    finally:
        candidate.close()


if __name__ == '__main__' and sys.argv[1:2] == [CONVERT_COMMAND]:
    _convert_command(*sys.argv[2:])
