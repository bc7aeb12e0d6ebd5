"""Write an FCN-ready VGG16 SavedModel, the file `load_vgg` expects.

One builder serves every source of weights:
  * `random_vgg16_weights(width)`  - a VGG16-shaped net with random weights and a
    width multiplier (the offline demo and the tests),
  * `keras_vgg16_weights(file)`    - Keras' ImageNet VGG16, its fully connected
    layers turned into convolutions so the net runs on any image size.

The SavedModel has tag `vgg16` and the tensors of the classic `vgg.zip`:
`image_input:0` (float RGB, 0-255, any size), `keep_prob:0` (defaults to 1.0),
`layer3_out:0` (pool3, stride 8), `layer4_out:0` (pool4, stride 16) and
`layer7_out:0` (fc7 after ReLU and dropout, stride 32). The ImageNet
preprocessing (RGB->BGR, mean subtraction) happens inside the graph. Variables
are trainable, as in the classic model, so fine-tuning reaches the encoder.

A random encoder may also get group normalisation after every convolution
(`norm_groups`): the CamVid demo's, which learns from scratch on a few hundred
images. The pretrained VGG16 never has it: its weights were learnt without.
"""
import argparse
import os
import tempfile

import numpy as np

from roadseg import process

if __name__ == '__main__':  # before TensorFlow loads: its first log lines come at import
    process.filter_native_stderr()

# Not process.graph_mode_tf: the Keras child process below needs eager execution, which that switches off.
import tensorflow.compat.v1 as tf  # noqa: E402

from roadseg import atomic  # noqa: E402
from roadseg.config import VGG_SOURCES, VGG_TAG  # noqa: E402
from roadseg.data import downloads  # noqa: E402
from roadseg.errors import DownloadError, VGGModelError  # noqa: E402

IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)
INPUT_SPREAD = 64.0  # roughly the standard deviation of mean-subtracted 0-255 pixels
# (block, number of 3x3 convs, output channels) of VGG16.
CONV_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))
FC_WIDTH = 4096
FC6_KERNEL = 7
KERAS_LAYER_NAMES = {'fc6': 'fc1', 'fc7': 'fc2'}
KERAS_EXPORT_COMMAND = '_export-keras-weights'
KERAS_EXPORT_TIMEOUT = 1800  # seconds; building Keras' VGG16 takes about 10 s
GROUP_NORM_EPSILON = 1e-5


def vgg16_kernel_shapes(width=1.0):
    """Ordered {layer name: kernel shape} of the fully convolutional VGG16.

    `width` scales every channel count (1.0 = the real VGG16).
    """
    if width <= 0:
        raise ValueError('width multiplier must be > 0, got %r' % (width,))
    scaled = lambda channels: max(1, int(round(channels * width)))
    shapes = {}
    in_ch = 3
    for block, convs, channels in CONV_BLOCKS:
        for i in range(1, convs + 1):
            shapes['block%d_conv%d' % (block, i)] = (3, 3, in_ch, scaled(channels))
            in_ch = scaled(channels)
    fc = scaled(FC_WIDTH)
    shapes['fc6'] = (FC6_KERNEL, FC6_KERNEL, in_ch, fc)
    shapes['fc7'] = (1, 1, fc, fc)
    return shapes


def random_vgg16_weights(width=1.0, seed=0):
    """He-initialised weights for every layer: {name: (kernel, bias)}.

    The first layer is scaled down by the spread of the mean-subtracted 0-255
    input, so activations are of order 1 from the first layer to fc7, as He
    initialisation intends; training from scratch is then stable with Adam.
    """
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in vgg16_kernel_shapes(width).items():
        fan_in = shape[0] * shape[1] * shape[2]
        kernel = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        weights[name] = (kernel, np.zeros(shape[3], np.float32))
    first_kernel, first_bias = weights['block1_conv1']
    weights['block1_conv1'] = (first_kernel / np.float32(INPUT_SPREAD), first_bias)
    return weights


def keras_vgg16_weights(keras_weights):
    """{name: (kernel, bias)} of `keras.applications.VGG16(weights=keras_weights, include_top=True)`.

    `keras_weights` is a Keras weights file (the ImageNet .h5, or a
    `.weights.h5` saved by Keras) or None for Keras' random initialisation.
    Keras 3 needs eager execution, which the TF1-style code here turns off, so
    the Keras model lives in a child process that hands its weights over in an
    .npz file.
    """
    with tempfile.TemporaryDirectory(prefix='keras-vgg-') as scratch:
        exported = os.path.join(scratch, 'weights.npz')
        finished = process.run_module_apart('roadseg.vgg_builder', KERAS_EXPORT_COMMAND, keras_weights or '', exported,
                                            capture_output=True, text=True, timeout=KERAS_EXPORT_TIMEOUT)
        if finished.returncode != 0:
            reason = (finished.stderr.strip().splitlines() or ['no message'])[-1]
            raise VGGModelError('could not read the Keras VGG16 weights %s (%s); delete the file and run again to '
                                'download a fresh copy' % (keras_weights, reason[:200]))
        with np.load(exported) as arrays:
            return {name: (arrays[name + '/kernel'], arrays[name + '/bias']) for name in vgg16_kernel_shapes()}


def _export_keras_weights(keras_weights, exported):
    """In the child process: build Keras' VGG16 and save its weights as FCN-ready arrays.

    fc1 (25088x4096) becomes a 7x7x512x4096 convolution: Keras flattens pool5
    in (row, column, channel) order, which is exactly a C-order reshape.
    """
    import keras
    model = keras.applications.VGG16(weights=keras_weights or None, include_top=True)
    arrays = {}
    for name, shape in vgg16_kernel_shapes().items():
        kernel, bias = model.get_layer(KERAS_LAYER_NAMES.get(name, name)).get_weights()
        arrays[name + '/kernel'] = np.asarray(kernel, np.float32).reshape(shape)
        arrays[name + '/bias'] = np.asarray(bias, np.float32)
    np.savez(exported, **arrays)


def _group_norm(x, groups):
    """Group normalisation (Wu & He, 2018) over the channels of x, in `groups` groups (fewer if x has fewer channels).

    Per image and group, unlike batch norm: the statistics do not depend on the batch, so training with batches of
    a few images, validation and inference all see the same function. The moments are taken per channel first,
    then per group (the groups are equal, so the mean of channel means is the group's): on a CPU that is much
    cheaper than reducing a 5-D reshape of x (docs/experiments.md).
    """
    channels = int(x.shape[-1])
    groups = min(groups, channels)
    if channels % groups:
        raise ValueError('%d channels do not split into %d groups; choose a width whose channel counts they divide'
                         % (channels, groups))
    batch, per_group = tf.shape(x)[0], channels // groups

    def per_group_mean(channel_values):
        grouped = tf.reshape(channel_values, [batch, groups, per_group])
        return tf.reduce_mean(grouped, 2, keepdims=True)

    def per_channel(group_values):
        return tf.reshape(tf.broadcast_to(group_values, [batch, groups, per_group]), [batch, 1, 1, channels])

    mean = per_group_mean(tf.reduce_mean(x, [1, 2]))
    variance = tf.maximum(per_group_mean(tf.reduce_mean(tf.square(x), [1, 2])) - tf.square(mean), 0.0)
    gamma = tf.get_variable('gamma', [channels], initializer=tf.ones_initializer())
    beta = tf.get_variable('beta', [channels], initializer=tf.zeros_initializer())
    scale = per_channel(tf.rsqrt(variance + GROUP_NORM_EPSILON)) * gamma
    return x * scale + (beta - per_channel(mean) * scale)


def _conv_relu(x, name, kernel_shape, norm_groups=0):
    with tf.variable_scope(name):
        kernel = tf.get_variable('kernel', kernel_shape, initializer=tf.zeros_initializer())
        # Kept under group norm too (which cancels it), so that every source of weights has {name: (kernel, bias)}.
        bias = tf.get_variable('bias', kernel_shape[-1:], initializer=tf.zeros_initializer())
        x = tf.nn.bias_add(tf.nn.conv2d(x, kernel, [1, 1, 1, 1], 'SAME'), bias)
        return tf.nn.relu(_group_norm(x, norm_groups) if norm_groups else x)


def _max_pool(x, name):
    # SAME (ceil) pooling, as the original FCN: odd sizes round up, never lose a border.
    return tf.nn.max_pool2d(x, 2, 2, 'SAME', name=name)


def build_vgg16_graph(kernel_shapes, norm_groups=0):
    """Build the encoder in the default graph; returns the five named tensors.

    norm_groups > 0 puts group normalisation in that many groups after every convolution, fc6 and fc7 included.
    """
    if norm_groups < 0:
        raise ValueError('the number of normalisation groups must be >= 0 (0: none), got %r' % (norm_groups,))
    image_input = tf.placeholder(tf.float32, [None, None, None, 3], name='image_input')
    keep_prob = tf.placeholder_with_default(1.0, [], name='keep_prob')
    x = tf.reverse(image_input, axis=[-1]) - tf.constant(IMAGENET_BGR_MEAN, tf.float32)
    pools = {}
    for block, convs, _ in CONV_BLOCKS:
        for i in range(1, convs + 1):
            name = 'block%d_conv%d' % (block, i)
            x = _conv_relu(x, name, kernel_shapes[name], norm_groups)
        x = pools[block] = _max_pool(x, 'pool%d' % block)
    for name in ('fc6', 'fc7'):
        x = tf.nn.dropout(_conv_relu(x, name, kernel_shapes[name], norm_groups), rate=1.0 - keep_prob)
    return (image_input, keep_prob,
            tf.identity(pools[3], name='layer3_out'),
            tf.identity(pools[4], name='layer4_out'),
            tf.identity(x, name='layer7_out'))


def write_vgg16_savedmodel(export_dir, weights, norm_groups=0):
    """Write `weights` ({name: (kernel, bias)}) as the FCN-ready VGG16 SavedModel.

    Values are fed into the variables rather than baked into the graph, so the
    full model stays far below protobuf's 2 GB limit. With norm_groups, the
    normalisation's scales and offsets start as the identity (ones, zeros).
    """
    if os.path.exists(export_dir):
        raise FileExistsError('%s already exists; remove it to write a new VGG model there' % export_dir)
    kernel_shapes = {name: kernel.shape for name, (kernel, _) in weights.items()}
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as sess:
        build_vgg16_graph(kernel_shapes, norm_groups)
        fed = _load_weights(sess, weights)
        sess.run(tf.variables_initializer([v for v in tf.global_variables() if v not in fed]))
        return save_savedmodel(sess, VGG_TAG, export_dir)


def save_savedmodel(sess, tag, export_dir, signatures=None, replace=False):
    """Save the session's graph and variables as a SavedModel with `tag`; complete or not at all."""
    with atomic.folder(export_dir, replace=replace) as staging:
        builder = tf.saved_model.Builder(os.path.join(staging, 'model'))
        builder.add_meta_graph_and_variables(sess, [tag], signature_def_map=signatures)
        builder.save()
        for name in os.listdir(os.path.join(staging, 'model')):
            os.rename(os.path.join(staging, 'model', name), os.path.join(staging, name))
        os.rmdir(os.path.join(staging, 'model'))
    return export_dir


def _load_weights(sess, weights):
    """Initialise each kernel and bias by feeding its value to its initial-value input; returns those variables."""
    variables = {v.op.name: v for v in tf.global_variables()}
    fed = []
    for name, (kernel, bias) in weights.items():
        for suffix, value in (('/kernel', kernel), ('/bias', bias)):
            variable = variables[name + suffix]
            sess.run(variable.initializer, {variable.initializer.inputs[1]: value})
            fed.append(variable)
    return fed


def write_random_vgg16(export_dir, width=1.0, seed=0, norm_groups=0):
    """A VGG16-shaped SavedModel with random weights (no download), with group norm if norm_groups > 0."""
    return write_vgg16_savedmodel(export_dir, random_vgg16_weights(width, seed), norm_groups)


def write_keras_vgg16(export_dir, keras_weights):
    """The FCN-ready SavedModel of Keras' VGG16 with the weights in `keras_weights` (a file, or None)."""
    return write_vgg16_savedmodel(export_dir, keras_vgg16_weights(keras_weights))


# --------------------------------------------------------------------------- getting the pretrained VGG16

def build_vgg_from_keras(data_dir, url=downloads.KERAS_VGG16_URL):
    """Write data_dir/vgg from Keras' ImageNet VGG16 weights, downloading them (528 MB) if not cached."""
    weights = downloads.keras_weights_path(url)
    if not os.path.isfile(weights):
        downloads.download_file(url, weights, 'VGG16 ImageNet weights (Keras)')
    print('Converting %s into an FCN-ready SavedModel at %s' % (weights, os.path.join(data_dir, 'vgg')))
    return write_keras_vgg16(os.path.join(data_dir, 'vgg'), weights)


def ensure_vgg(data_dir, source='udacity', udacity_url=downloads.VGG_URL, keras_url=downloads.KERAS_VGG16_URL):
    """Return data_dir/vgg, getting it from `source` if absent.

    'udacity' downloads the classic vgg.zip and falls back to Keras' ImageNet weights, with a notice, when
    that download fails; 'keras' goes to Keras directly. When nothing can be downloaded, the error names both
    addresses and how to place the files by hand.
    """
    if source not in VGG_SOURCES:
        raise ValueError('unknown VGG source %r; use one of %s' % (source, ', '.join(VGG_SOURCES)))
    vgg_path = os.path.join(data_dir, 'vgg')
    if downloads.vgg_is_complete(vgg_path):
        return vgg_path
    failures = []
    if source == 'udacity':
        try:
            return downloads.maybe_download_pretrained_vgg(data_dir, udacity_url)
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
                           keras_url, downloads.keras_weights_path(keras_url)))


def main(argv=None):
    parser = argparse.ArgumentParser(description='Write an FCN-ready VGG16 SavedModel (tag vgg16).')
    commands = parser.add_subparsers(dest='command', required=True)
    random_parser = commands.add_parser('random', help='random weights (no download)')
    random_parser.add_argument('export_dir')
    random_parser.add_argument('--width', type=float, default=1.0, help='channel multiplier (default: 1.0)')
    random_parser.add_argument('--seed', type=int, default=0)
    random_parser.add_argument('--group-norm', type=int, default=0, metavar='GROUPS',
                               help='group normalisation in GROUPS groups after every convolution (default: 0, none)')
    keras_parser = commands.add_parser('keras', help="from a Keras VGG16 weights file (e.g. Keras' ImageNet .h5)")
    keras_parser.add_argument('export_dir')
    keras_parser.add_argument('weights', help='the Keras weights file')
    export_parser = commands.add_parser(KERAS_EXPORT_COMMAND)
    export_parser.add_argument('weights')
    export_parser.add_argument('exported')
    args = parser.parse_args(argv)
    if args.command == KERAS_EXPORT_COMMAND:
        _export_keras_weights(args.weights, args.exported)
        return
    try:
        if args.command == 'random':
            print('wrote %s' % write_random_vgg16(args.export_dir, args.width, args.seed, args.group_norm))
        else:
            print('wrote %s' % write_keras_vgg16(args.export_dir, args.weights))
    except (ValueError, FileExistsError, VGGModelError) as error:
        parser.exit(2, 'vgg_builder.py: %s\n' % error)


if __name__ == '__main__':
    main()
