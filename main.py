"""FCN-8 road segmentation on a pretrained VGG16, in TensorFlow 1.x graph style.

    python main.py [train] [flags]   train on KITTI Road, write test overlays to runs/<timestamp>/
    python main.py demo [flags]      the same, offline: a generated road dataset and a small random VGG

Run `python main.py --help` or `python main.py demo --help` for the flags.
"""
import argparse
import collections
import math
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402
from tqdm import tqdm  # noqa: E402

import helper  # noqa: E402
import roadgen  # noqa: E402
import vgg_builder  # noqa: E402

tf.disable_eager_execution()
tf.get_logger().setLevel('ERROR')

NUM_CLASSES = 2
VGG_TENSOR_NAMES = ('image_input:0', 'keep_prob:0', 'layer3_out:0', 'layer4_out:0', 'layer7_out:0')

# Decoder constants. The pool4/pool3 scalings are those of the at-once FCN-8s
# (Long, Shelhamer, Darrell): they bring the pretrained VGG16's large pool3 and
# pool4 activations to the scale of its fc7 scores.
AT_ONCE_SKIP_SCALES = (0.01, 0.0001)
# Initial stddevs: 0.01 for the 1x1 score kernels, as in the classic exercise;
# 0.1 for the transposed convolutions. At 0.01 the three stacked upsamplings
# scale the scores down ~10^4-fold, Adam's normalised steps then drift the
# encoder before the decoder passes any signal, and training from the demo's
# random VGG diverged at every learning rate tried (README, "Demo").
SCORE_INIT_STDDEV = 0.01
UPSAMPLE_INIT_STDDEV = 0.1
L2_SCALE = 1e-3
OUTPUT_STRIDE = 32


class VGGModelError(RuntimeError):
    """The VGG SavedModel is missing or lacks the tag or tensors FCN-8 needs."""


# --------------------------------------------------------------------------- model

def load_vgg(sess, vgg_path):
    """Load the VGG16 SavedModel into `sess`.

    Returns (image_input, keep_prob, layer3_out, layer4_out, layer7_out).
    """
    if not os.path.isfile(os.path.join(vgg_path, 'saved_model.pb')):
        raise VGGModelError('no SavedModel at %s (expected %s). Run python main.py to download the pretrained '
                            'VGG16, or pass --vgg-dir.' % (vgg_path, os.path.join(vgg_path, 'saved_model.pb')))
    try:
        tf.saved_model.loader.load(sess, [vgg_builder.VGG_TAG], vgg_path)
    except RuntimeError as error:
        raise VGGModelError('%s is not the FCN-ready VGG16 model: %s' % (vgg_path, error)) from error
    graph = sess.graph
    missing = [name for name in VGG_TENSOR_NAMES if not _has_tensor(graph, name)]
    if missing:
        placeholders = [op.name for op in graph.get_operations() if op.type.startswith('Placeholder')]
        raise VGGModelError('%s lacks the tensor(s) %s that FCN-8 needs. It has the inputs %s and %d operations '
                            'in all; a model built by vgg_builder.py or the classic vgg.zip has all five.'
                            % (vgg_path, ', '.join(missing), placeholders, len(graph.get_operations())))
    return tuple(graph.get_tensor_by_name(name) for name in VGG_TENSOR_NAMES)


def _has_tensor(graph, name):
    try:
        graph.get_tensor_by_name(name)
        return True
    except KeyError:
        return False


def _kernel(name, shape, stddev):
    """A small random kernel whose L2 norm is added to the regularisation losses."""
    kernel = tf.get_variable(name, shape, initializer=tf.truncated_normal_initializer(stddev=stddev))
    tf.add_to_collection(tf.GraphKeys.REGULARIZATION_LOSSES, L2_SCALE * tf.nn.l2_loss(kernel))
    return kernel


def _score(x, num_classes, name):
    """1x1 convolution to per-class scores."""
    with tf.variable_scope(name):
        kernel = _kernel('kernel', [1, 1, x.shape[-1], num_classes], SCORE_INIT_STDDEV)
        bias = tf.get_variable('bias', [num_classes], initializer=tf.zeros_initializer())
        return tf.nn.bias_add(tf.nn.conv2d(x, kernel, [1, 1, 1, 1], 'SAME'), bias)


def _upsample(x, num_classes, factor, output_hw, name):
    """Transposed convolution by `factor` (kernel 2*factor) to the spatial size `output_hw`."""
    with tf.variable_scope(name):
        kernel = _kernel('kernel', [2 * factor, 2 * factor, num_classes, num_classes], UPSAMPLE_INIT_STDDEV)
        bias = tf.get_variable('bias', [num_classes], initializer=tf.zeros_initializer())
        output_shape = tf.concat([tf.shape(x)[:1], output_hw, [num_classes]], axis=0)
        y = tf.nn.conv2d_transpose(x, kernel, output_shape, [1, factor, factor, 1], 'SAME')
        return tf.nn.bias_add(y, bias)


def layers(vgg_layer3_out, vgg_layer4_out, vgg_layer7_out, num_classes, skip_scales=AT_ONCE_SKIP_SCALES):
    """The FCN-8 decoder: scores of layer7, x2, + pool4 scores, x2, + pool3 scores, x8.

    pool4 and pool3 are multiplied by `skip_scales` before their 1x1 scores;
    an encoder whose activations are all of one scale (like the demo's random
    VGG) wants (1, 1).

    For an input whose height and width are multiples of 32 the output has the
    input's size. Otherwise (VGG pools round up) it is 8 * ceil(size / 8): the
    input's size rounded up to a multiple of 8, the extra rows and columns at
    the bottom and right. Returns logits [batch, H, W, num_classes].
    """
    with tf.variable_scope(None, default_name='fcn8'):
        score7 = _score(vgg_layer7_out, num_classes, 'score_layer7')
        score4 = _score(vgg_layer4_out * skip_scales[0], num_classes, 'score_pool4')
        score3 = _score(vgg_layer3_out * skip_scales[1], num_classes, 'score_pool3')
        fuse4 = _upsample(score7, num_classes, 2, tf.shape(score4)[1:3], 'up2_layer7') + score4
        fuse3 = _upsample(fuse4, num_classes, 2, tf.shape(score3)[1:3], 'up2_pool4') + score3
        output = _upsample(fuse3, num_classes, 8, 8 * tf.shape(score3)[1:3], 'up8_pool3')
    static_hw = [None if d is None else 8 * d for d in vgg_layer3_out.shape.as_list()[1:3]]
    output.set_shape([vgg_layer3_out.shape[0]] + static_hw + [num_classes])
    return tf.identity(output, name='fcn8_output')


def optimize(nn_last_layer, correct_label, learning_rate, num_classes):
    """Flattened softmax cross-entropy plus the L2 losses, minimised by Adam.

    The cross-entropy is the mean over labelled pixels: a pixel whose one-hot
    row is all zero (KITTI's don't-care) adds nothing. Returns (logits
    [N*H*W, num_classes], train_op, loss).
    """
    logits = tf.reshape(nn_last_layer, [-1, num_classes], name='logits')
    labels = tf.reshape(tf.cast(correct_label, tf.float32), [-1, num_classes])
    pixel_losses = tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    labelled = tf.reduce_sum(labels)
    cross_entropy = tf.reduce_sum(pixel_losses) / tf.maximum(labelled, 1.0)
    loss = tf.add(cross_entropy, tf.losses.get_regularization_loss(), name='loss')
    train_op = tf.train.AdamOptimizer(learning_rate).minimize(loss)
    return logits, train_op, loss


def train_nn(sess, epochs, batch_size, get_batches_fn, train_op, cross_entropy_loss, input_image,
             correct_label, keep_prob, learning_rate, keep_prob_value=0.5, learning_rate_value=1e-4):
    """Train for `epochs`; a progress bar per epoch, a summary line after it.

    Returns the mean loss of every epoch. Stops with FloatingPointError on a
    non-finite loss, before the weights it produced are used any further.
    """
    num_images = getattr(get_batches_fn, 'num_images', None)
    batches_per_epoch = math.ceil(num_images / batch_size) if num_images else None
    history = []
    for epoch in range(1, epochs + 1):
        started, total, seen = time.time(), 0.0, 0
        bar = tqdm(get_batches_fn(batch_size), total=batches_per_epoch, desc='epoch %d/%d' % (epoch, epochs),
                   unit='batch', leave=False)
        for images, labels in bar:
            _, loss = sess.run([train_op, cross_entropy_loss],
                               {input_image: images, correct_label: labels,
                                keep_prob: keep_prob_value, learning_rate: learning_rate_value})
            if not np.isfinite(loss):
                raise FloatingPointError('loss became %s in epoch %d; lower --learning-rate' % (loss, epoch))
            total, seen = total + loss * len(images), seen + len(images)
            bar.set_postfix(loss='%.4f' % (total / seen))
        if not seen:
            raise ValueError('get_batches_fn(%d) yielded no batches' % batch_size)
        history.append(total / seen)
        tqdm.write('epoch %d/%d: loss %.4f over %d images in %.1fs'
                   % (epoch, epochs, history[-1], seen, time.time() - started))
    return history


FCN8 = collections.namedtuple('FCN8', 'image_input keep_prob correct_label learning_rate output logits train_op loss')


def build_fcn8(sess, vgg_path, num_classes, skip_scales=AT_ONCE_SKIP_SCALES):
    """Load VGG, add the decoder and the optimiser, initialise what VGG did not bring."""
    image_input, keep_prob, layer3, layer4, layer7 = load_vgg(sess, vgg_path)
    pretrained = set(tf.global_variables())
    output = layers(layer3, layer4, layer7, num_classes, skip_scales)
    correct_label = tf.placeholder(tf.float32, [None, None, None, num_classes], name='correct_label')
    learning_rate = tf.placeholder(tf.float32, [], name='learning_rate')
    logits, train_op, loss = optimize(output, correct_label, learning_rate, num_classes)
    # Only the new variables: initialising all would wipe out the pretrained weights.
    sess.run(tf.variables_initializer([v for v in tf.global_variables() if v not in pretrained]))
    return FCN8(image_input, keep_prob, correct_label, learning_rate, output, logits, train_op, loss)


def save_checkpoint(sess, run_dir):
    """Save all variables to run_dir/model/ atomically (staged, then renamed)."""
    target = os.path.join(run_dir, 'model')
    staging = tempfile.mkdtemp(prefix='.model-', dir=run_dir)
    try:
        tf.train.Saver().save(sess, os.path.join(staging, 'model.ckpt'), write_meta_graph=True)
        if os.path.exists(target):
            shutil.rmtree(target)
        os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


# --------------------------------------------------------------------------- jobs

def train_and_save(args, data_road, vgg_path, pairs):
    """Train on `pairs`, save the model and the test overlays; returns (sess, model, run_dir, history).

    The caller owns (and closes) the returned session.
    """
    tf.reset_default_graph()
    tf.set_random_seed(args.seed)
    sess = tf.Session()
    model = build_fcn8(sess, vgg_path, NUM_CLASSES, tuple(args.skip_scales))
    get_batches_fn = helper.gen_batch_function(os.path.join(data_road, 'training'), args.image_shape,
                                               pairs=pairs, seed=args.seed)
    run_dir = helper.new_run_dir(args.runs_dir)
    started = time.time()
    history = train_nn(sess, args.epochs, args.batch_size, get_batches_fn, model.train_op, model.loss,
                       model.image_input, model.correct_label, model.keep_prob, model.learning_rate,
                       keep_prob_value=args.keep_prob, learning_rate_value=args.learning_rate)
    print('Trained %d epochs on %d images in %.0fs: loss %.4f -> %.4f'
          % (args.epochs, len(pairs), time.time() - started, history[0], history[-1]))
    print('Model saved to %s' % save_checkpoint(sess, run_dir))
    helper.save_inference_samples(args.runs_dir, os.path.dirname(data_road), sess, args.image_shape, model.logits,
                                  model.keep_prob, model.image_input, output_dir=run_dir)
    return sess, model, run_dir, history


def train(args):
    """The main job: KITTI Road + pretrained VGG16."""
    data_road = helper.maybe_download_kitti(args.data_dir, args.kitti_url)
    vgg_path = args.vgg_dir or helper.ensure_vgg(args.data_dir, args.vgg_source)
    pairs = helper.kitti_road_pairs(os.path.join(data_road, 'training'))
    sess, _, run_dir, _ = train_and_save(args, data_road, vgg_path, pairs)
    sess.close()
    print('train: done, model and overlays in %s' % run_dir)


DEMO_HELD_OUT = 40
DEMO_TRAIN_IMAGES = 440
DEMO_VGG_WIDTH = 0.125


def demo(args):
    """Offline end to end: generated roads, a small random VGG16-shaped encoder, IoU on held-out images."""
    demo_dir = os.path.join(args.data_dir, 'demo')
    data_road = roadgen.ensure_dataset(demo_dir, n_train=DEMO_TRAIN_IMAGES + DEMO_HELD_OUT, n_test=12,
                                       seed=args.seed)
    vgg_path = args.vgg_dir or os.path.join(demo_dir, 'vgg')
    if args.vgg_dir is None and not helper.vgg_is_complete(vgg_path):
        vgg_builder.write_random_vgg16(vgg_path, width=DEMO_VGG_WIDTH, seed=args.seed)
    pairs = helper.kitti_road_pairs(os.path.join(data_road, 'training'))
    train_pairs, held_out = helper.split_pairs(pairs, DEMO_HELD_OUT / len(pairs))
    sess, model, run_dir, _ = train_and_save(args, data_road, vgg_path, train_pairs)
    metrics = helper.evaluate_pairs(sess, model.logits, model.keep_prob, model.image_input, held_out,
                                    args.image_shape)
    sess.close()
    print('demo: road IoU %.2f on %d held-out images, overlays in %s'
          % (metrics.result()['iou'], len(held_out), run_dir))


# --------------------------------------------------------------------------- command line

def _add_training_flags(parser, defaults):
    parser.add_argument('--data-dir', default='data', help='where KITTI (data_road/) and vgg/ live (default: data)')
    parser.add_argument('--runs-dir', default='runs', help='where run folders are written (default: runs)')
    parser.add_argument('--vgg-dir', default=None,
                        help='a VGG16 SavedModel folder to use instead of the default (%s)' % defaults['vgg'])
    parser.add_argument('--epochs', type=int, default=defaults['epochs'], help='(default: %(default)s)')
    parser.add_argument('--batch-size', type=int, default=defaults['batch_size'], help='(default: %(default)s)')
    parser.add_argument('--learning-rate', type=float, default=defaults['learning_rate'],
                        help='Adam learning rate (default: %(default)s)')
    parser.add_argument('--keep-prob', type=float, default=defaults['keep_prob'],
                        help='dropout keep probability of fc6/fc7 while training (default: %(default)s)')
    parser.add_argument('--image-shape', type=int, nargs=2, metavar=('H', 'W'), default=defaults['image_shape'],
                        help='network input size, multiples of %d (default: %%(default)s)' % OUTPUT_STRIDE)
    parser.add_argument('--skip-scales', type=float, nargs=2, metavar=('POOL4', 'POOL3'),
                        default=defaults['skip_scales'],
                        help='factors on pool4 and pool3 before their scores (default: %(default)s)')
    parser.add_argument('--seed', type=int, default=0, help='random seed (default: %(default)s)')


TRAIN_DEFAULTS = dict(vgg='<data-dir>/vgg, downloaded if absent', epochs=25, batch_size=8, learning_rate=1e-4,
                      keep_prob=0.5, image_shape=[160, 576], skip_scales=list(AT_ONCE_SKIP_SCALES))
DEMO_DEFAULTS = dict(vgg='<data-dir>/demo/vgg, built with random weights if absent', epochs=15, batch_size=8,
                     learning_rate=3e-4, keep_prob=1.0, image_shape=[96, 320], skip_scales=[1.0, 1.0])


def build_parser():
    parser = argparse.ArgumentParser(description='FCN-8 road segmentation (KITTI Road, VGG16).')
    commands = parser.add_subparsers(dest='command')
    train_parser = commands.add_parser('train', help='train on KITTI Road (the default command)')
    _add_training_flags(train_parser, TRAIN_DEFAULTS)
    train_parser.add_argument('--vgg-source', choices=helper.VGG_SOURCES, default='udacity',
                              help="where to get VGG16 if <data-dir>/vgg is absent: Udacity's vgg.zip (falling back "
                                   "to keras when it fails) or Keras' ImageNet weights (default: %(default)s)")
    train_parser.add_argument('--kitti-url', default=None,
                              help='the data_road.zip link KITTI mails you: downloaded and unpacked if KITTI is absent')
    demo_parser = commands.add_parser('demo', help='offline demo on a generated road dataset')
    _add_training_flags(demo_parser, DEMO_DEFAULTS)
    return parser


def parse_args(argv):
    argv = list(argv)
    if not argv or argv[0].startswith('-') and argv[0] not in ('-h', '--help'):
        argv.insert(0, 'train')
    args = build_parser().parse_args(argv)
    validate_args(args)
    return args


def validate_args(args):
    problems = []
    if any(side <= 0 or side % OUTPUT_STRIDE for side in args.image_shape):
        problems.append('--image-shape %d %d: both sides must be positive multiples of %d (e.g. 160 576)'
                        % (tuple(args.image_shape) + (OUTPUT_STRIDE,)))
    if args.epochs < 1:
        problems.append('--epochs must be >= 1')
    if args.batch_size < 1:
        problems.append('--batch-size must be >= 1')
    if not 0 < args.keep_prob <= 1:
        problems.append('--keep-prob must be in (0, 1]')
    if not args.learning_rate > 0:
        problems.append('--learning-rate must be > 0')
    if problems:
        raise SystemExit('main.py: ' + '; '.join(problems))
    args.image_shape = tuple(args.image_shape)


def run(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    job = {'train': train, 'demo': demo}[args.command]
    try:
        job(args)
    except (helper.DatasetError, helper.DownloadError, VGGModelError, FloatingPointError) as error:
        raise SystemExit('main.py %s: %s' % (args.command, error))


if __name__ == '__main__':
    run()
