"""Running a model: probabilities at each image's own size, from a training session or an exported SavedModel.

The export is the run's best checkpoint as a self-contained SavedModel (tag `serve`) with a
`serving_default` signature: input `image` uint8 [B, H, W, 3] of any size; outputs `road_probability`
[B, H, W] and `probabilities` [B, H, W, C] at that size (resize and softmax inside the graph). It also holds
`model_info:0`, the ModelInfo JSON of what it was trained on. With ModelInfo.flip_average the network also sees
each image mirrored, and the two probability maps are averaged (mirrored back) inside the graph.
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


def probability_graph(logits, image_input, image_shape):
    """Graph ops from `logits` (4-D, or flattened to [B*H*W, C]) to class probabilities at a requested size.

    Returns (probabilities [B, h, w, classes], output_size placeholder [2]); softmax and resize run in the graph.
    """
    num_classes = logits.shape[-1]
    batch = tf.shape(image_input)[0]
    scores = tf.reshape(logits, tf.stack([batch, image_shape[0], image_shape[1], num_classes]))
    output_size = tf.placeholder_with_default(tf.constant(image_shape, tf.int32), [2], name='output_size')
    return resize_bilinear(tf.nn.softmax(scores), output_size), output_size


def resize_bilinear(tensor, size):
    """Bilinear at half-pixel centres, as the training images are resized (images.resize_image). In graph mode
    `tf.image.resize` is TF1's, which samples from the top-left corner: a shift of up to half an input pixel."""
    return tf.compat.v2.image.resize(tensor, size, method='bilinear')


class SessionPredictor:
    """Class probabilities, at the images' own size, from a graph being trained (one call per same-size batch)."""

    def __init__(self, sess, logits, keep_prob, image_input, image_shape, road_class=1, palette=None,
                 flip_average=False):
        self.sess, self.keep_prob, self.image_input, self.image_shape = sess, keep_prob, image_input, image_shape
        self.road_class, self.palette, self.flip_average = road_class, palette, flip_average
        self.probabilities, self.output_size = probability_graph(logits, image_input, image_shape)

    def __call__(self, batch):
        resized = np.stack([images.resize_image(image, self.image_shape) for image in batch])
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


def export_inference_model(checkpoint_prefix, export_dir, vgg_path, info, skip_scales, replace=True):
    """Write the inference SavedModel of a training checkpoint (see the module's docstring), atomically."""
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as sess:
        image = tf.placeholder(tf.uint8, [None, None, None, 3], name='image')
        resized = resize_bilinear(tf.cast(image, tf.float32), info.image_shape)
        if info.flip_average:
            resized = tf.concat([resized, resized[:, :, ::-1]], axis=0)
        with model.vgg_load_errors_explained(vgg_path):
            tf.saved_model.loader.load(sess, [config.VGG_TAG], vgg_path, input_map={'image_input:0': resized})
        _, _, layer3, layer4, layer7 = model.vgg_tensors(graph, vgg_path)
        scores = model.layers(layer3, layer4, layer7, info.num_classes, skip_scales)
        probabilities = resize_bilinear(tf.nn.softmax(scores), tf.shape(image)[1:3])
        if info.flip_average:
            probabilities = averaged_with_mirror(probabilities, tf.shape(image)[0])
        probabilities = tf.identity(probabilities, name='probabilities')
        road_probability = tf.identity(probabilities[..., info.road_class], name='road_probability')
        tf.constant(info.to_json(), name='model_info')
        model.restore_checkpoint(sess, checkpoint_prefix)
        signature = tf.saved_model.signature_def_utils.predict_signature_def(
            inputs={'image': image}, outputs={'road_probability': road_probability, 'probabilities': probabilities})
        return vgg_builder.save_savedmodel(sess, SERVE_TAG, export_dir, {SIGNATURE: signature}, replace)


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
