"""FCN-8 on VGG16 (Long, Shelhamer, Darrell): the classic exercise's load_vgg, layers and optimize.

The VGG contract is the classic vgg.zip's: a SavedModel tagged config.VGG_TAG with config.VGG_TENSOR_NAMES.
"""
import collections
import os

from google.protobuf import message
from tensorflow.core.protobuf import saved_model_pb2

from roadseg.config import ADAM_EPSILON, AT_ONCE_SKIP_SCALES, VGG_TAG, VGG_TENSOR_NAMES
from roadseg.errors import RunFolderError, VGGModelError
from roadseg.process import graph_mode_tf

tf = graph_mode_tf()

NUM_CLASSES = 2

# Initial stddevs: 0.01 for the 1x1 score kernels, as in the classic exercise; 0.1 for the transposed
# convolutions: at 0.01 the three stacked upsamplings pass almost no signal at first and training from a
# random VGG diverged (docs/experiments.md).
SCORE_INIT_STDDEV = 0.01
UPSAMPLE_INIT_STDDEV = 0.1
L2_SCALE = 1e-3


# --------------------------------------------------------------------------- the encoder: VGG16

def load_vgg(sess, vgg_path):
    """Load the VGG16 SavedModel into `sess`; returns (image_input, keep_prob, layer3_out, layer4_out, layer7_out).

    The loader is called exactly as in the classic exercise; what it reports is then said in one line.
    """
    with vgg_load_errors_explained(vgg_path):
        tf.saved_model.loader.load(sess, [VGG_TAG], vgg_path)
    return vgg_tensors(sess.graph, vgg_path)


class vgg_load_errors_explained:
    """Turn what the SavedModel loader raises for a missing or damaged VGG into a VGGModelError that says why."""

    def __init__(self, vgg_path):
        self.vgg_path = vgg_path

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if error is None or not isinstance(error, (OSError, RuntimeError, ValueError, tf.errors.OpError,
                                                   message.Error)):
            return False
        raise VGGModelError('%s: %s' % (self.vgg_path or '(empty path)', _vgg_problem(error))) from error


def _vgg_problem(error):
    text = str(error)
    get = 'Run python main.py to download the pretrained VGG16, or pass --vgg-dir'
    if isinstance(error, message.Error) or 'parse' in text.lower():
        return 'saved_model.pb is damaged (it does not parse). Delete the folder and get it again. ' + get
    if 'could not be found in SavedModel' in text:
        return ('this SavedModel has no graph tagged %r: it is not the FCN-ready VGG16 (a run\'s export/ is '
                'tagged "serve"). %s' % (VGG_TAG, get))
    if isinstance(error, OSError) or 'does not exist' in text:
        return 'no SavedModel here (saved_model.pb is missing). ' + get
    first_line = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return ('its variables are missing or damaged (%s). Delete the folder and get it again. %s'
            % (first_line[:160], get))


def vgg_tensors(graph, vgg_path, scope=''):
    """The five VGG tensors of `graph` (of the copy imported under `scope`), by name; VGGModelError names the
    missing ones."""
    names = {op_output.name for op in graph.get_operations() for op_output in op.outputs}
    wanted = [scope + '/' + name if scope else name for name in VGG_TENSOR_NAMES]
    missing = [name for name in wanted if name not in names]
    if missing:
        placeholders = [op.name for op in graph.get_operations() if op.type.startswith('Placeholder')]
        raise VGGModelError('%s lacks the tensor(s) %s that FCN-8 needs. It has the inputs %s and %d operations '
                            'in all; a model built by vgg_builder.py or the classic vgg.zip has all five.'
                            % (vgg_path, ', '.join(missing), placeholders, len(graph.get_operations())))
    return tuple(graph.get_tensor_by_name(name) for name in wanted)


# --------------------------------------------------------------------------- the decoder: FCN-8

def _kernel(name, shape, stddev):
    """A small random kernel whose L2 norm is added to the regularisation losses."""
    kernel = tf.get_variable(name, shape, initializer=tf.truncated_normal_initializer(stddev=stddev))
    tf.add_to_collection(tf.GraphKeys.REGULARIZATION_LOSSES, L2_SCALE * tf.nn.l2_loss(kernel))
    return kernel


def score(x, num_classes, name):
    """1x1 convolution to per-class scores (FCN's score_* layers)."""
    with tf.variable_scope(name):
        kernel = _kernel('kernel', [1, 1, x.shape[-1], num_classes], SCORE_INIT_STDDEV)
        bias = tf.get_variable('bias', [num_classes], initializer=tf.zeros_initializer())
        return tf.nn.bias_add(tf.nn.conv2d(x, kernel, [1, 1, 1, 1], 'SAME'), bias)


def upscore(x, num_classes, factor, output_hw, name):
    """Transposed convolution by `factor` (kernel 2*factor) to the spatial size `output_hw` (FCN's upscore)."""
    with tf.variable_scope(name):
        kernel = _kernel('kernel', [2 * factor, 2 * factor, num_classes, num_classes], UPSAMPLE_INIT_STDDEV)
        bias = tf.get_variable('bias', [num_classes], initializer=tf.zeros_initializer())
        output_shape = tf.concat([tf.shape(x)[:1], output_hw, [num_classes]], axis=0)
        y = tf.nn.conv2d_transpose(x, kernel, output_shape, [1, factor, factor, 1], 'SAME')
        return tf.nn.bias_add(y, bias)


def layers(vgg_layer3_out, vgg_layer4_out, vgg_layer7_out, num_classes, skip_scales=AT_ONCE_SKIP_SCALES):
    """The FCN-8 decoder: scores of layer7, x2, + pool4 scores, x2, + pool3 scores, x8.

    The output is 8x pool3's size: the input's size for sides that are multiples of 8 (VGG's SAME pools
    round up). pool4 and pool3 are multiplied by `skip_scales` before their scores; an encoder whose
    activations are all of one scale (the demo's random VGG) wants (1, 1). Returns logits [B, H, W, classes].
    """
    with tf.variable_scope(None, default_name='fcn8'):
        score_fr = score(vgg_layer7_out, num_classes, 'score_layer7')
        score_pool4 = score(vgg_layer4_out * skip_scales[0], num_classes, 'score_pool4')
        score_pool3 = score(vgg_layer3_out * skip_scales[1], num_classes, 'score_pool3')
        fuse_pool4 = upscore(score_fr, num_classes, 2, tf.shape(score_pool4)[1:3], 'up2_layer7') + score_pool4
        fuse_pool3 = upscore(fuse_pool4, num_classes, 2, tf.shape(score_pool3)[1:3], 'up2_pool4') + score_pool3
        output = upscore(fuse_pool3, num_classes, 8, 8 * tf.shape(score_pool3)[1:3], 'up8_pool3')
    static_hw = [None if d is None else 8 * d for d in vgg_layer3_out.shape.as_list()[1:3]]
    output.set_shape([vgg_layer3_out.shape[0]] + static_hw + [num_classes])
    return tf.identity(output, name='fcn8_output')


# --------------------------------------------------------------------------- the loss and the optimiser

def lovasz_softmax(scores, labels):
    """The Lovasz-softmax loss (Berman, Rannen Triki, Blaschko, CVPR 2018): a convex surrogate of 1 - IoU, per image
    and class present in it, averaged. Cross-entropy weighs every pixel alike; this weighs them by what they do to the
    IoU, so a small road's false positives cost as much as a large one's.

    `scores` [B, H, W, C] logits, `labels` [B, H, W, C] one-hot (all zero: don't care, which adds nothing).
    """
    batch, num_classes = tf.shape(scores)[0], scores.shape[-1]
    probabilities = tf.transpose(tf.reshape(tf.nn.softmax(scores), [batch, -1, num_classes]), [0, 2, 1])
    truth = tf.transpose(tf.reshape(tf.cast(labels, tf.float32), [batch, -1, num_classes]), [0, 2, 1])
    labelled = tf.reduce_sum(truth, axis=1, keepdims=True)
    # A don't-care pixel's error is 0: it sorts after every pixel with an error, where it changes nothing.
    errors = tf.abs(truth - probabilities) * labelled
    errors_sorted, order = tf.nn.top_k(errors, k=tf.shape(errors)[2])
    truth_sorted = tf.gather(truth, order, batch_dims=2)
    # The Lovasz extension's gradient: how much each pixel, taken in order of its error, adds to 1 - IoU.
    total = tf.reduce_sum(truth_sorted, axis=2, keepdims=True)
    intersection = total - tf.cumsum(truth_sorted, axis=2)
    union = total + tf.cumsum(1.0 - truth_sorted, axis=2)
    jaccard = 1.0 - intersection / union
    weights = tf.concat([jaccard[:, :, :1], jaccard[:, :, 1:] - jaccard[:, :, :-1]], axis=2)
    per_class = tf.reduce_sum(errors_sorted * tf.stop_gradient(weights), axis=2)
    present = tf.cast(total[:, :, 0] > 0, tf.float32)
    return tf.reduce_sum(per_class * present) / tf.maximum(tf.reduce_sum(present), 1.0)


def optimize(nn_last_layer, correct_label, learning_rate, num_classes, var_list=None, mixed_precision=False,
             clip_norm=None, label_smoothing=0.0, adam_epsilon=ADAM_EPSILON, lovasz_weight=0.0):
    """Flattened softmax cross-entropy plus the L2 losses, minimised by Adam.

    The cross-entropy is the mean over labelled pixels: a pixel whose one-hot row is all zero (KITTI's
    don't-care) adds nothing. `var_list` limits training to some variables (e.g. the decoder's);
    `mixed_precision` adds the dynamic loss scaling float16 needs; `clip_norm` clips the global gradient
    norm. `label_smoothing` moves that share of each labelled pixel's target evenly over the classes, so the
    loss has its minimum at finite logits. `adam_epsilon` (a number or a scalar tensor) bounds how far Adam
    scales up small gradients: a weight whose gradients are far smaller than it takes plain SGD steps at
    rate/epsilon. `lovasz_weight` adds that multiple of the Lovasz-softmax loss (of unsmoothed labels; it needs
    `nn_last_layer` and `correct_label` as images, [B, H, W, C]). Returns (logits [N*H*W, num_classes], train_op,
    loss).
    """
    logits = tf.reshape(nn_last_layer, [-1, num_classes], name='logits')
    labels = tf.reshape(tf.cast(correct_label, tf.float32), [-1, num_classes])
    labelled = tf.reduce_sum(labels, axis=1, keepdims=True)  # 0 for a don't-care pixel: it stays all zero
    targets = labels * (1.0 - label_smoothing) + labelled * (label_smoothing / num_classes)
    pixel_losses = tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=logits)
    data_loss = tf.reduce_sum(pixel_losses) / tf.maximum(tf.reduce_sum(labels), 1.0)  # the cross-entropy
    if lovasz_weight:
        data_loss += lovasz_weight * lovasz_softmax(nn_last_layer, correct_label)
    loss = tf.add(data_loss, tf.losses.get_regularization_loss(), name='loss')
    optimizer = tf.train.AdamOptimizer(learning_rate, epsilon=adam_epsilon)
    if mixed_precision:
        optimizer = tf.mixed_precision.MixedPrecisionLossScaleOptimizer(optimizer, 'dynamic')
    gradients = [(g, v) for g, v in optimizer.compute_gradients(loss, var_list=var_list) if g is not None]
    if clip_norm:
        clipped, _ = tf.clip_by_global_norm([g for g, _ in gradients], clip_norm)
        gradients = list(zip(clipped, [v for _, v in gradients]))
    train_op = optimizer.apply_gradients(gradients, global_step=tf.train.get_or_create_global_step())
    return logits, train_op, loss


FCN8 = collections.namedtuple('FCN8', 'image_input keep_prob correct_label learning_rate adam_epsilon output logits '
                                     'train_op loss')


def build_fcn8(sess, vgg_path, num_classes, skip_scales=AT_ONCE_SKIP_SCALES, freeze_encoder=False,
               mixed_precision=False, clip_norm=None, label_smoothing=0.0, lovasz_weight=0.0):
    """Load VGG, add the decoder and the optimiser, initialise only what VGG did not bring.

    With `freeze_encoder` only the decoder is trained: no gradients flow into VGG (fc6 and fc7 included).
    Adam's epsilon is a placeholder (ADAM_EPSILON unless fed), so that it may change from one epoch to the next.
    """
    image_input, keep_prob, layer3, layer4, layer7 = load_vgg(sess, vgg_path)
    pretrained = set(tf.global_variables())
    output = layers(layer3, layer4, layer7, num_classes, skip_scales)
    correct_label = tf.placeholder(tf.float32, [None, None, None, num_classes], name='correct_label')
    learning_rate = tf.placeholder(tf.float32, [], name='learning_rate')
    adam_epsilon = tf.placeholder_with_default(ADAM_EPSILON, [], name='adam_epsilon')
    decoder_variables = [v for v in tf.trainable_variables() if v not in pretrained]
    logits, train_op, loss = optimize(output, correct_label, learning_rate, num_classes,
                                      var_list=decoder_variables if freeze_encoder else None,
                                      mixed_precision=mixed_precision, clip_norm=clip_norm,
                                      label_smoothing=label_smoothing, adam_epsilon=adam_epsilon,
                                      lovasz_weight=lovasz_weight)
    # Only the new variables: initialising all would wipe out the pretrained weights.
    sess.run(tf.variables_initializer([v for v in tf.global_variables() if v not in pretrained]))
    return FCN8(image_input, keep_prob, correct_label, learning_rate, adam_epsilon, output, logits, train_op, loss)


def restore_checkpoint(sess, prefix, variables=None):
    """Load a checkpoint into the session's variables (or into `variables`, {name in the checkpoint: variable});
    a damaged one is said in one line, with the way out."""
    try:
        tf.train.Saver(variables or tf.global_variables()).restore(sess, prefix)
    except (tf.errors.OpError, ValueError) as error:
        raise RunFolderError('%s is damaged (%s); delete that checkpoint folder to go on from the other one '
                             '(checkpoints/best or checkpoints/last), or start a new run'
                             % (os.path.dirname(prefix), str(error).strip().splitlines()[0][:120])) from None


def read_saved_model(folder):
    """The SavedModel proto of `folder`'s saved_model.pb, parsed without building a graph (OSError or
    protobuf's message.Error when it is missing or damaged)."""
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(folder, 'saved_model.pb'), 'rb') as f:
        saved.ParseFromString(f.read())
    return saved
