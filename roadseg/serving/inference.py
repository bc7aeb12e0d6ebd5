"""Running a model: probabilities at each image's own size, from a training session or an exported SavedModel.

The export is the run's best checkpoint as a self-contained SavedModel (tag `serve`) with a
`serving_default` signature: input `image` uint8 [B, H, W, 3] of any size; outputs `road_probability`
[B, H, W] and `probabilities` [B, H, W, C] at that size (resize and softmax inside the graph). It also holds
`model_info:0`, the ModelInfo JSON of what it was trained on. With ModelInfo.flip_average the network also sees
each image mirrored, and the two probability maps are averaged (mirrored back) inside the graph. With several
ModelInfo.scales the network sees the image at each of those sizes and the maps are averaged too: the export then
holds one copy of the network per size (a TF1 graph cannot run one copy at several sizes without control flow,
which the ONNX and TFLite forms would not keep), all restored from the same checkpoint.
"""
import os

import numpy as np
from google.protobuf import message

from roadseg import config, model, vgg_builder
from roadseg.config import ModelInfo
from roadseg.data import datasets, images
from roadseg.errors import DatasetError, ModelError
from roadseg.process import graph_mode_tf

tf = graph_mode_tf()

SERVE_TAG = 'serve'
SIGNATURE = 'serving_default'
INPUT = 'image:0'
OUTPUT = 'probabilities:0'
MODEL_INFO = 'model_info:0'
EXPORT_FOLDER = 'export'


def input_shapes(image_shape, scales=(1.0,)):
    """The network's input size at each of `scales` times `image_shape`: image_shape itself at 1, other sides
    rounded to multiples of OUTPUT_MULTIPLE so that the network's output has its input's size."""
    multiple = config.OUTPUT_MULTIPLE
    return [tuple(image_shape) if scale == 1 else
            tuple(max(multiple, multiple * int(round(side * scale / multiple))) for side in image_shape)
            for scale in scales]


def probability_graph(logits, image_input):
    """Graph ops from `logits` (4-D, or flattened to [B*H*W, C]) of an input whose sides are multiples of
    OUTPUT_MULTIPLE to class probabilities at a requested size (the input's unless fed).

    Returns (probabilities [B, h, w, classes], output_size placeholder [2]); softmax and resize run in the graph.
    """
    num_classes = logits.shape[-1]
    scores = tf.reshape(logits, tf.concat([tf.shape(image_input)[:3], [num_classes]], axis=0))
    output_size = tf.placeholder_with_default(tf.shape(image_input)[1:3], [2], name='output_size')
    return resize_bilinear(tf.nn.softmax(scores), output_size), output_size


def resize_bilinear(tensor, size):
    """Bilinear at half-pixel centres, as the training images are resized (images.resize_image). In graph mode
    `tf.image.resize` is TF1's, which samples from the top-left corner: a shift of up to half an input pixel."""
    return tf.compat.v2.image.resize(tensor, size, method='bilinear')


class SessionPredictor:
    """Class probabilities, at the images' own size, from a graph being trained (one call per same-size batch)."""

    def __init__(self, sess, logits, keep_prob, image_input, image_shape, road_class=1, palette=None,
                 flip_average=False, scales=(1.0,)):
        self.sess, self.keep_prob, self.image_input = sess, keep_prob, image_input
        self.road_class, self.palette, self.flip_average = road_class, palette, flip_average
        self.input_shapes = input_shapes(image_shape, scales)
        self.probabilities, self.output_size = probability_graph(logits, image_input)

    def __call__(self, batch):
        maps = [self._at_input_shape(batch, shape) for shape in self.input_shapes]
        return maps[0] if len(maps) == 1 else sum(maps) / np.float32(len(maps))

    def _at_input_shape(self, batch, input_shape):
        resized = np.stack([images.resize_image(image, input_shape) for image in batch])
        if self.flip_average:
            resized = np.concatenate([resized, resized[:, :, ::-1]])
        probabilities = self.sess.run(self.probabilities, {self.image_input: resized, self.keep_prob: 1.0,
                                                           self.output_size: batch[0].shape[:2]})
        if self.flip_average:
            return averaged_with_mirror(probabilities, len(batch))
        return probabilities


def averaged_with_mirror(probabilities, count):
    """The mean of the first `count` maps [N, H, W, C] and of the `count` after them mirrored back (numpy arrays or
    TensorFlow tensors alike): the flip average, whose mirrored half sees each road from its other side."""
    return 0.5 * (probabilities[:count] + probabilities[count:, :, ::-1])


def export_inference_model(checkpoint_prefix, export_dir, vgg_path, info, skip_scales, replace=True,
                           averaged=False):
    """Write the inference SavedModel of a training checkpoint (see the module's docstring), atomically; with
    `averaged`, of the mean of the weights that the checkpoint holds beside them (--average-weights)."""
    with tf.Graph().as_default(), tf.Session() as sess:
        image = tf.placeholder(tf.uint8, [None, None, None, 3], name='image')
        maps = []
        for copy, input_shape in enumerate(input_shapes(info.image_shape, info.scales)):
            scope = 'scale%d' % copy if copy else ''
            before = set(tf.global_variables())
            maps.append(_network_probabilities(sess, image, input_shape, scope, vgg_path, info, skip_scales))
            model.restore_checkpoint(sess, checkpoint_prefix, {_checkpoint_name(v, scope, averaged): v
                                                               for v in tf.global_variables() if v not in before})
        probabilities = tf.identity(maps[0] if len(maps) == 1 else tf.add_n(maps) / len(maps), name='probabilities')
        road_probability = tf.identity(probabilities[..., info.road_class], name='road_probability')
        tf.constant(info.to_json(), name='model_info')
        signature = tf.saved_model.signature_def_utils.predict_signature_def(
            inputs={'image': image}, outputs={'road_probability': road_probability, 'probabilities': probabilities})
        return vgg_builder.save_savedmodel(sess, SERVE_TAG, export_dir, {SIGNATURE: signature}, replace)


def _network_probabilities(sess, image, input_shape, scope, vgg_path, info, skip_scales):
    """One copy of the network (its variables in `scope`, '' for none) on `image` resized to `input_shape`:
    class probabilities at the image's size, flip-averaged if the model is."""
    resized = resize_bilinear(tf.cast(image, tf.float32), input_shape)
    if info.flip_average:
        resized = tf.concat([resized, resized[:, :, ::-1]], axis=0)
    with model.vgg_load_errors_explained(vgg_path):
        tf.saved_model.loader.load(sess, [config.VGG_TAG], vgg_path, import_scope=scope or None,
                                   input_map={'image_input:0': resized})
    _, _, layer3, layer4, layer7 = model.vgg_tensors(sess.graph, vgg_path, scope)
    with tf.variable_scope(scope or tf.get_variable_scope()):
        scores = model.layers(layer3, layer4, layer7, info.num_classes, skip_scales)
    probabilities = resize_bilinear(tf.nn.softmax(scores), tf.shape(image)[1:3])
    return averaged_with_mirror(probabilities, tf.shape(image)[0]) if info.flip_average else probabilities


def _checkpoint_name(variable, scope, averaged=False):
    """The training checkpoint's name of a variable of the network's copy in `scope` (or of its mean)."""
    name = variable.op.name[len(scope) + 1:] if scope else variable.op.name
    return '%s/%s' % (config.WEIGHT_AVERAGE_SCOPE, name) if averaged else name


def resolve_export_dir(path):
    """A run folder means its export/; anything else is taken as an exported model folder."""
    inside = os.path.join(path, EXPORT_FOLDER)
    return inside if os.path.isdir(inside) else path


class ExportedModel:
    """An exported model: RGB uint8 images of one size in, class probabilities at that size out."""

    def __init__(self, path):
        export_dir = resolve_export_dir(path)
        if not os.path.isfile(os.path.join(export_dir, 'saved_model.pb')):
            raise ModelError('no trained model at %s: pass a run folder made by python main.py train (it holds '
                             'export/), its export/ folder, or an .onnx file made by python main.py export'
                             % path)
        self.graph = tf.Graph()
        self.sess = tf.Session(graph=self.graph)
        try:
            with self.graph.as_default():
                tf.saved_model.loader.load(self.sess, [SERVE_TAG], export_dir)
            self.info = ModelInfo.from_json(self.sess.run(MODEL_INFO).decode())
            self.palette = datasets.label_format(self.info.dataset, self.info.classes).palette
        except (RuntimeError, KeyError, ValueError, TypeError, OSError, tf.errors.OpError, message.Error,
                DatasetError) as error:
            self.sess.close()
            raise ModelError('%s is not a model exported by this project (%s). %s'
                             % (export_dir, _why_not_ours(error), 'Pass a run folder made by python main.py '
                                                                 'train, or re-export it with python main.py '
                                                                 'finish RUN')) from error
        self.road_class = self.info.road_class

    def __call__(self, batch):
        return self.sess.run(OUTPUT, {INPUT: np.stack(batch)})

    def close(self):
        self.sess.close()


def _why_not_ours(error):
    text = str(error)
    if "tags {'serve'}" in text or 'could not be found in SavedModel' in text:
        return 'it has no graph tagged "serve"; a VGG16 encoder is tagged "vgg16"'
    if isinstance(error, (KeyError, ValueError, TypeError, DatasetError)):
        return 'it lacks %s or %s, or its %s is damaged' % (INPUT, MODEL_INFO, MODEL_INFO)
    return 'it does not load: %s' % (text.strip().splitlines() or [type(error).__name__])[0][:160]
