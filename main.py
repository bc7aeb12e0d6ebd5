"""FCN-8 road segmentation on a pretrained VGG16, in TensorFlow 1.x graph style.

    python main.py [train] [flags]   train on KITTI Road, write test overlays to runs/<timestamp>/
    python main.py demo [flags]      the same, offline: a generated road dataset and a small random VGG
    python main.py evaluate|infer    KITTI metrics of a trained model; overlays of new images
    python main.py bench [flags]     speed benchmark (bench.py)

Run `python main.py --help` or `python main.py demo --help` for the flags.
"""
import argparse
import collections
import ctypes
import ctypes.util
import json
import math
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402
from tensorflow.core.protobuf.rewriter_config_pb2 import RewriterConfig  # noqa: E402
from tqdm import tqdm  # noqa: E402

import helper  # noqa: E402
import road_metrics  # noqa: E402
import roadgen  # noqa: E402
import run_folder  # noqa: E402
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
# The decoder's output has the input's size when both sides are multiples of this (see layers).
OUTPUT_MULTIPLE = 8


class VGGModelError(RuntimeError):
    """The VGG SavedModel is missing or lacks the tag or tensors FCN-8 needs."""


# --------------------------------------------------------------------------- process settings (CPU speed)

FROZEN_WEIGHTS_SWITCH = 'TF_ONEDNN_ASSUME_FROZEN_WEIGHTS'


class ProcessSettingError(RuntimeError):
    """The process is set up in a way that would make training wrong."""


def _glibc():
    """glibc as a ctypes library, or None (musl, other platforms)."""
    libc_name = ctypes.util.find_library('c')
    if not libc_name or 'musl' in libc_name:
        return None
    libc = ctypes.CDLL(libc_name)
    return libc if hasattr(libc, 'mallopt') else None


# The glibc handle once tune_malloc applied (settle_malloc's cue), and whether settle_malloc has run.
_MALLOC_TUNING = {'libc': None, 'settled': False}


def tune_malloc():
    """Keep oneDNN's big per-step buffers in the process instead of handing them back to the kernel (phase 1).

    At every step oneDNN converts each convolution kernel to its blocked
    layout in a fresh buffer: fc6's 411 MB kernel three times per training
    step (forward, input gradient, kernel gradient back to TensorFlow's
    layout), fc7's 67 MB likewise. oneDNN takes these from posix_memalign,
    not from TensorFlow's allocator; glibc serves blocks that large with mmap
    and unmaps them on free, so every step faults the pages in again (350,000
    page faults per training step at 160x576, batch 2). Reused from the heap
    instead, a full-width training step on the 2-core development VMs went
    from 2.44 to 2.16 s (Intel) and from 1.70 to about 1.4 s (AMD).

    Two phases. Here, before the first Session starts TensorFlow's threads:
    one arena, so that once settled every thread's big blocks come from the
    one heap (other arenas would mmap them anyway).
    After the first training step, settle_malloc: no more mmap, no trimming.
    In between, TensorFlow's own allocator grows the pools it keeps for
    good; made with mmap, they stay out of the heap where oneDNN's buffers
    come and go, which fragments far less: the bench's peak was 4.35-4.92 GB
    over eight runs, against 4.7-6.3 GB with everything switched here.
    Returns whether it applied (glibc only).
    """
    libc = _glibc()
    m_arena_max = -8
    if libc and libc.mallopt(m_arena_max, 1) == 1:
        _MALLOC_TUNING['libc'] = libc
    return _MALLOC_TUNING['libc'] is not None


def settle_malloc():
    """Phase 2 of tune_malloc, once TensorFlow's pools have grown (after a first training step); else nothing."""
    libc = _MALLOC_TUNING['libc']
    if libc is None or _MALLOC_TUNING['settled']:
        return
    m_trim_threshold, m_mmap_max = -1, -4
    libc.mallopt(m_mmap_max, 0)
    libc.mallopt(m_trim_threshold, 2 ** 31 - 1)
    _MALLOC_TUNING['settled'] = True


def cache_kernel_layouts():
    """Let oneDNN convert each kernel to its own layout once and keep it, in a process that only runs models.

    Without it every convolution converts its kernel again at every call (fc6's
    is 411 MB). With the full-width model, the 22 KITTI sample test images
    (batches of 8 and 2) took 3.4 s instead of 5.0 s per pass, after a one-off
    1.4 s at the first batch, for about 0.4 GB more memory.
    TensorFlow reads the switch once per process, and a process that trains
    must never have it: its forward pass would keep using the first weights.
    Call it before the first Session runs.
    """
    os.environ[FROZEN_WEIGHTS_SWITCH] = '1'


def check_weights_not_frozen():
    """Refuse to train in a process where oneDNN assumes the weights never change (see cache_kernel_layouts)."""
    if os.environ.get(FROZEN_WEIGHTS_SWITCH, '').strip().lower() in ('1', 'true'):
        raise ProcessSettingError('%s=%s is set: oneDNN would keep using the first weights and training would '
                                  'silently go wrong. Unset it (it is only for processes that run a trained model)'
                                  % (FROZEN_WEIGHTS_SWITCH, os.environ[FROZEN_WEIGHTS_SWITCH]))


# --------------------------------------------------------------------------- model

def load_vgg(sess, vgg_path):
    """Load the VGG16 SavedModel into `sess`.

    Returns (image_input, keep_prob, layer3_out, layer4_out, layer7_out).
    """
    return _import_vgg(sess, vgg_path)


def _import_vgg(sess, vgg_path, input_map=None):
    """load_vgg, optionally wiring the VGG's inputs to other tensors (`input_map`, as import_meta_graph)."""
    if not os.path.isfile(os.path.join(vgg_path, 'saved_model.pb')):
        raise VGGModelError('no SavedModel at %s (expected %s). Run python main.py to download the pretrained '
                            'VGG16, or pass --vgg-dir.' % (vgg_path, os.path.join(vgg_path, 'saved_model.pb')))
    try:
        tf.saved_model.loader.load(sess, [vgg_builder.VGG_TAG], vgg_path, input_map=input_map)
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

    The output is 8x pool3's size. VGG's SAME pools round up, so for input
    sides that are multiples of 8 this is the input's size; otherwise the
    input's size rounded up to a multiple of 8, the extra rows and columns at
    the bottom and right. Returns logits [batch, H, W, num_classes].

    pool4 and pool3 are multiplied by `skip_scales` before their 1x1 scores;
    an encoder whose activations are all of one scale (like the demo's random
    VGG) wants (1, 1).
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


def optimize(nn_last_layer, correct_label, learning_rate, num_classes, var_list=None, mixed_precision=False):
    """Flattened softmax cross-entropy plus the L2 losses, minimised by Adam.

    The cross-entropy is the mean over labelled pixels: a pixel whose one-hot
    row is all zero (KITTI's don't-care) adds nothing. `var_list` limits
    training to some variables (e.g. the decoder's); `mixed_precision` adds
    dynamic loss scaling, which float16 compute on a GPU needs (the cast
    itself is session_config's graph rewrite). Returns (logits
    [N*H*W, num_classes], train_op, loss).
    """
    logits = tf.reshape(nn_last_layer, [-1, num_classes], name='logits')
    labels = tf.reshape(tf.cast(correct_label, tf.float32), [-1, num_classes])
    pixel_losses = tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    labelled = tf.reduce_sum(labels)
    cross_entropy = tf.reduce_sum(pixel_losses) / tf.maximum(labelled, 1.0)
    loss = tf.add(cross_entropy, tf.losses.get_regularization_loss(), name='loss')
    optimizer = tf.train.AdamOptimizer(learning_rate)
    if mixed_precision:
        optimizer = tf.mixed_precision.MixedPrecisionLossScaleOptimizer(optimizer, 'dynamic')
    train_op = optimizer.minimize(loss, var_list=var_list)
    return logits, train_op, loss


def session_config(xla=False, mixed_precision=False):
    """Session options: XLA JIT compilation; mixed precision as grappler's graph rewrites.

    Mixed precision computes in float16 on GPUs and in bfloat16 on oneDNN CPUs
    (AMX, AVX-512 BF16); the variables stay float32 (the master weights).
    """
    config = tf.ConfigProto()
    if xla:
        config.graph_options.optimizer_options.global_jit_level = tf.OptimizerOptions.ON_1
    if mixed_precision:
        config.graph_options.rewrite_options.auto_mixed_precision = RewriterConfig.ON
        config.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 = RewriterConfig.ON
    return config


def train_nn(sess, epochs, batch_size, get_batches_fn, train_op, cross_entropy_loss, input_image,
             correct_label, keep_prob, learning_rate, keep_prob_value=0.5, learning_rate_value=1e-4,
             start_epoch=0, on_epoch_end=None):
    """Train epochs start_epoch+1 .. epochs; a progress bar per epoch, a summary line after it.

    `on_epoch_end(epoch, mean_loss)` may validate and save; the text it
    returns ends the epoch's line. Returns the mean loss of every epoch
    trained. Stops with FloatingPointError on a non-finite loss, before the
    weights it produced are saved or used.
    """
    check_weights_not_frozen()
    num_images = getattr(get_batches_fn, 'num_images', None)
    batches_per_epoch = math.ceil(num_images / batch_size) if num_images else None
    history = []
    for epoch in range(start_epoch + 1, epochs + 1):
        started, total, seen = time.time(), 0.0, 0
        bar = tqdm(get_batches_fn(batch_size), total=batches_per_epoch, desc='epoch %d/%d' % (epoch, epochs),
                   unit='batch', leave=False)
        for images, labels in bar:
            _, loss = sess.run([train_op, cross_entropy_loss],
                               {input_image: images, correct_label: labels,
                                keep_prob: keep_prob_value, learning_rate: learning_rate_value})
            settle_malloc()
            if not np.isfinite(loss):
                raise FloatingPointError('loss became %s in epoch %d; lower --learning-rate' % (loss, epoch))
            total, seen = total + loss * len(images), seen + len(images)
            bar.set_postfix(loss='%.4f' % (total / seen))
        if not seen:
            raise ValueError('get_batches_fn(%d) yielded no batches' % batch_size)
        history.append(total / seen)
        trained = time.time() - started
        report = on_epoch_end(epoch, history[-1]) if on_epoch_end else ''
        tqdm.write('epoch %d/%d: loss %.4f over %d images in %.1fs%s'
                   % (epoch, epochs, history[-1], seen, trained, ', ' + report if report else ''))
    return history


FCN8 = collections.namedtuple('FCN8', 'image_input keep_prob correct_label learning_rate output logits train_op loss')


def build_fcn8(sess, vgg_path, num_classes, skip_scales=AT_ONCE_SKIP_SCALES, freeze_encoder=False,
               mixed_precision=False):
    """Load VGG, add the decoder and the optimiser, initialise what VGG did not bring.

    With `freeze_encoder` only the decoder is trained: no gradients flow into VGG.
    """
    image_input, keep_prob, layer3, layer4, layer7 = load_vgg(sess, vgg_path)
    pretrained = set(tf.global_variables())
    output = layers(layer3, layer4, layer7, num_classes, skip_scales)
    correct_label = tf.placeholder(tf.float32, [None, None, None, num_classes], name='correct_label')
    learning_rate = tf.placeholder(tf.float32, [], name='learning_rate')
    decoder = [v for v in tf.trainable_variables() if v not in pretrained]
    logits, train_op, loss = optimize(output, correct_label, learning_rate, num_classes,
                                      var_list=decoder if freeze_encoder else None, mixed_precision=mixed_precision)
    # Only the new variables: initialising all would wipe out the pretrained weights.
    sess.run(tf.variables_initializer([v for v in tf.global_variables() if v not in pretrained]))
    return FCN8(image_input, keep_prob, correct_label, learning_rate, output, logits, train_op, loss)


def export_inference_model(checkpoint_prefix, export_dir, vgg_path, image_shape, skip_scales,
                           num_classes=NUM_CLASSES, road_class=1):
    """Write an inference SavedModel (tag 'serve') from a training checkpoint.

    Input `image:0`: RGB uint8 [B, H, W, 3] of any size. Outputs
    `probabilities:0`: float [B, H, W, classes], the softmax resized back to
    the input's size; `road_probability:0`: [B, H, W], its road channel;
    `road_class:0`: that channel's index. Resizing to `image_shape` happens in
    the graph, as the training images were resized. Written to a temporary
    folder, then renamed.
    """
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as sess:
        image = tf.placeholder(tf.uint8, [None, None, None, 3], name='image')
        resized = tf.image.resize(tf.cast(image, tf.float32), image_shape, method='bilinear')
        _, _, layer3, layer4, layer7 = _import_vgg(sess, vgg_path, {'image_input:0': resized})
        scores = layers(layer3, layer4, layer7, num_classes, skip_scales)
        probabilities = tf.identity(tf.image.resize(tf.nn.softmax(scores), tf.shape(image)[1:3],
                                                    method='bilinear'), name='probabilities')
        tf.identity(probabilities[..., road_class], name='road_probability')
        tf.constant(road_class, name='road_class')
        tf.train.Saver(tf.global_variables()).restore(sess, checkpoint_prefix)
        return vgg_builder.save_savedmodel(sess, helper.ExportedModel.TAG, export_dir)


# --------------------------------------------------------------------------- training runs

def new_run_config(args, dataset, data_root, vgg_path, train_pairs, val_pairs, test_images):
    """Everything a run needs to be resumed exactly: settings, the split and the images to overlay."""
    return {'dataset': dataset, 'classes': getattr(args, 'classes', 'road'),
            'data_root': os.path.abspath(data_root), 'vgg_path': os.path.abspath(vgg_path),
            'test_images': [os.path.abspath(path) for path in test_images],
            'image_shape': list(args.image_shape), 'batch_size': args.batch_size,
            'learning_rate': args.learning_rate, 'keep_prob': args.keep_prob,
            'skip_scales': list(args.skip_scales), 'seed': args.seed, 'epochs': args.epochs,
            'augment': args.augment, 'freeze_encoder': args.freeze_encoder, 'xla': args.xla,
            'mixed_precision': args.mixed_precision,
            'train': [list(pair) for pair in train_pairs], 'val': [list(pair) for pair in val_pairs]}


def label_format(config):
    """(label decoder, number of classes, road class index) of a run."""
    return helper.LABEL_FORMATS[(config['dataset'], config['classes'])]


class EpochReporter:
    """After each epoch: validation metrics, metrics.csv, TensorBoard, the last and best checkpoints."""

    OVERLAYS_PER_EPOCH = 3

    def __init__(self, sess, model, run, config, state):
        self.sess, self.run, self.config = sess, run, config
        self.saver = tf.train.Saver(tf.global_variables(), max_to_keep=None)
        self.decoder, _, road_class = label_format(config)
        self.predict = helper.SessionPredictor(sess, model.logits, model.keep_prob, model.image_input,
                                               tuple(config['image_shape']), road_class)
        self.best_maxf, self.completed = state['best_maxf'], state['epoch']
        self.rows = run.read_metrics()
        # The loss train_nn checks is computed before each update: the last update of an epoch is checked here.
        self.weights_finite = tf.reduce_all([tf.reduce_all(tf.is_finite(v)) for v in tf.trainable_variables()])

    def __call__(self, epoch, loss):
        if not self.sess.run(self.weights_finite):
            raise FloatingPointError('the weights became non-finite in epoch %d; lower --learning-rate' % epoch)
        val_pairs = [tuple(pair) for pair in self.config['val']]
        result = {}
        if val_pairs:
            metrics, class_iou = helper.evaluate(self.predict, val_pairs, label_to_onehot=self.decoder)
            result = dict(metrics.result(), **({'miou': class_iou.mean()} if class_iou else {}))
        self.completed = epoch
        state = {'epoch': epoch, 'best_maxf': max(self.best_maxf, result.get('maxf', -1.0))}
        improved = result.get('maxf', -1.0) > self.best_maxf or not val_pairs
        if improved:  # best before last: a kill in between never leaves a best MaxF without its weights
            self.best_maxf = state['best_maxf']
            self.run.save_checkpoint(self.sess, self.saver, 'best', state)
        self.run.save_checkpoint(self.sess, self.saver, 'last', state)
        self.rows = [row for row in self.rows if int(row['epoch']) < epoch]
        self.rows.append(dict({'epoch': epoch, 'loss': '%.6f' % loss},
                              **{key: '%.6f' % result[key] for key in ('iou', 'maxf', 'ap', 'precision', 'recall',
                                                                       'miou') if key in result}))
        self.run.write_metrics(self.rows)
        self.run.write_summaries(epoch, dict({'loss': loss}, **{'val/' + k: result[k] for k in ('iou', 'maxf', 'miou')
                                                                  if k in result}),
                                 self._overlays(val_pairs))
        if not result:
            return ''
        return 'val road IoU %.3f MaxF %.3f%s%s' % (result['iou'], result['maxf'],
                                                   ', mean class IoU %.3f' % result['miou'] if 'miou' in result else '',
                                                   ' (best)' if improved else '')

    def _overlays(self, val_pairs):
        paths = [image for image, _ in val_pairs[:self.OVERLAYS_PER_EPOCH]]
        return [('val/%s' % os.path.basename(path), helper.overlay(image, probabilities, self.predict.road_class))
                for path, image, probabilities in helper.predictions(self.predict, paths)]

    def save_interrupted(self):
        """Ctrl-C: keep the weights as they are, counted as the last completed epoch."""
        state = {'epoch': self.completed, 'best_maxf': self.best_maxf}
        return self.run.save_checkpoint(self.sess, self.saver, 'last', state)


def fit(run, config, resume=False):
    """Train the run described by `config`, from its last checkpoint if `resume`.

    Returns (sess, model); the caller closes the session. Ctrl-C saves a
    checkpoint and stops with SystemExit; a non-finite loss stops with
    FloatingPointError and leaves the last good checkpoint in place.
    """
    tf.reset_default_graph()
    tf.set_random_seed(config['seed'])
    sess = tf.Session(config=session_config(config['xla'], config['mixed_precision']))
    decoder, num_classes, _ = label_format(config)
    model = build_fcn8(sess, config['vgg_path'], num_classes, tuple(config['skip_scales']),
                       config['freeze_encoder'], config['mixed_precision'])
    state = {'epoch': 0, 'best_maxf': -1.0}
    if resume:
        run.discard_unfinished_saves()
    saved = run.checkpoint_state('last') if resume else None
    if saved:
        tf.train.Saver(tf.global_variables()).restore(sess, run.checkpoint_prefix('last'))
        state = saved
    if resume:
        print('Resuming %s after epoch %d of %d' % (run.path, state['epoch'], config['epochs']))
    get_batches_fn = helper.gen_batch_function(config['data_root'], tuple(config['image_shape']),
                                               pairs=[tuple(pair) for pair in config['train']],
                                               seed=config['seed'], first_epoch=state['epoch'],
                                               label_to_onehot=decoder, augment=config['augment'])
    reporter = EpochReporter(sess, model, run, config, state)
    started = time.time()
    try:
        history = train_nn(sess, config['epochs'], config['batch_size'], get_batches_fn, model.train_op, model.loss,
                           model.image_input, model.correct_label, model.keep_prob, model.learning_rate,
                           keep_prob_value=config['keep_prob'], learning_rate_value=config['learning_rate'],
                           start_epoch=state['epoch'], on_epoch_end=reporter)
    except KeyboardInterrupt:
        saved = reporter.save_interrupted()
        raise SystemExit('Interrupted: saved %s after epoch %d. Continue with: python main.py train --resume %s'
                         % (saved, reporter.completed, run.path))
    except FloatingPointError as error:
        raise FloatingPointError('%s. The last good checkpoint (epoch %d) is in %s; continue with: '
                                 'python main.py train --resume %s' % (error, reporter.completed,
                                                                      run.checkpoint_dir('last'), run.path))
    finally:
        run.close()
    if history:
        print('Trained epochs %d-%d on %d images in %.0fs: loss %.4f -> %.4f; best validation MaxF %.3f'
              % (state['epoch'] + 1, config['epochs'], len(config['train']), time.time() - started, history[0],
                 history[-1], reporter.best_maxf))
    return sess, model


def finish_run(sess, model, run, config):
    """Export the best model and write the test overlays into the run folder."""
    _, num_classes, road_class = label_format(config)
    export_dir = export_inference_model(run.checkpoint_prefix('best'), os.path.join(run.path, 'export'),
                                        config['vgg_path'], tuple(config['image_shape']),
                                        tuple(config['skip_scales']), num_classes, road_class)
    print('Exported the best model to %s' % export_dir)
    predict = helper.SessionPredictor(sess, model.logits, model.keep_prob, model.image_input,
                                      tuple(config['image_shape']), road_class)
    written = helper.write_predictions(predict, config['test_images'], run.path)
    print('Saved %d test overlays to %s' % (written, run.path))


def training_data(args):
    """(dataset, root, train pairs, validation pairs, images to overlay) of --data-dir.

    KITTI: its training folder split by --val-fraction, overlays of its test
    images. CamVid (SegNet layout): its train and val splits, overlays of val.
    """
    dataset = args.dataset
    if dataset == 'auto':
        dataset = 'camvid' if helper.is_camvid(args.data_dir) else 'kitti'
    if dataset == 'camvid':
        val_pairs = helper.camvid_pairs(args.data_dir, 'val')
        return (dataset, args.data_dir, helper.camvid_pairs(args.data_dir, 'train'), val_pairs,
                [image for image, _ in val_pairs])
    if args.classes == 'all':
        raise helper.DatasetError('--classes all needs a CamVid dataset; %s is KITTI Road, whose labels only '
                                  'mark road' % args.data_dir)
    data_road = helper.maybe_download_kitti(args.data_dir, args.kitti_url)
    train_pairs, val_pairs = helper.split_pairs(helper.kitti_road_pairs(os.path.join(data_road, 'training')),
                                                args.val_fraction)
    return dataset, data_road, train_pairs, val_pairs, helper.kitti_test_images(data_road)


def train(args):
    """The main job: KITTI Road + pretrained VGG16 (or --resume RUN_DIR)."""
    if args.resume:
        run = run_folder.RunFolder(args.resume)
        config = run.read_config()
        if args.epochs_given:
            config['epochs'] = args.epochs
            run.write_config(config)
    else:
        dataset, data_root, train_pairs, val_pairs, test_images = training_data(args)
        vgg_path = args.vgg_dir or helper.ensure_vgg(args.data_dir, args.vgg_source)
        run = run_folder.RunFolder(helper.new_run_dir(args.runs_dir))
        config = new_run_config(args, dataset, data_root, vgg_path, train_pairs, val_pairs, test_images)
        run.write_config(config)
    sess, model = fit(run, config, resume=bool(args.resume))
    finish_run(sess, model, run, config)
    sess.close()
    print('train: done, model and overlays in %s' % run.path)


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
    run = run_folder.RunFolder(helper.new_run_dir(args.runs_dir))
    config = new_run_config(args, 'kitti', data_road, vgg_path, train_pairs, held_out,
                            helper.kitti_test_images(data_road))
    run.write_config(config)
    sess, model = fit(run, config)
    finish_run(sess, model, run, config)
    sess.close()
    metrics, _ = evaluate_model(os.path.join(run.path, 'export'), held_out)
    print('demo: road IoU %.2f on %d held-out images, overlays in %s'
          % (metrics.result()['iou'], len(held_out), run.path))


def evaluate_model(model_dir, pairs, label_to_onehot=helper.kitti_label_to_onehot):
    """(RoadMetrics, ClassIoU or None) of an exported model (a run folder or its export/) on labelled pairs."""
    exported = helper.ExportedModel(resolve_export_dir(model_dir))
    try:
        return helper.evaluate(exported, pairs, label_to_onehot=label_to_onehot)
    finally:
        exported.close()


def resolve_export_dir(model):
    """A run folder means its export/; anything else is taken as an exported model folder."""
    inside = os.path.join(model, 'export')
    return inside if os.path.isdir(inside) else model


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
                        help='network input size, multiples of %d (default: %%(default)s)' % OUTPUT_MULTIPLE)
    parser.add_argument('--skip-scales', type=float, nargs=2, metavar=('POOL4', 'POOL3'),
                        default=defaults['skip_scales'],
                        help='factors on pool4 and pool3 before their scores (default: %(default)s)')
    parser.add_argument('--seed', type=int, default=0, help='random seed (default: %(default)s)')
    parser.add_argument('--augment', action=argparse.BooleanOptionalAction, default=defaults['augment'],
                        help='random flips, brightness/contrast and scale/crop jitter of the training images '
                             '(default: %s)' % ('on' if defaults['augment'] else 'off'))
    parser.add_argument('--freeze-encoder', action='store_true',
                        help='train only the decoder (no gradients into VGG): faster, for small GPUs')
    parser.add_argument('--xla', action='store_true', help='compile the graph with XLA (JIT)')
    parser.add_argument('--mixed-precision', action='store_true',
                        help='float16 (GPU, with loss scaling) or bfloat16 (CPU) compute, float32 weights')
    parser.add_argument('--plain-malloc', action='store_true',
                        help="leave glibc's malloc settings alone: about 0.4 GB less peak memory for the "
                             "full-width model, 20-30%% slower steps on a CPU (see tune_malloc)")


DEFAULT_VAL_FRACTION = 1 / 6
TRAIN_DEFAULTS = dict(vgg='<data-dir>/vgg, downloaded if absent', epochs=25, batch_size=8, learning_rate=1e-4,
                      keep_prob=0.5, image_shape=[160, 576], skip_scales=list(AT_ONCE_SKIP_SCALES), augment=True)
DEMO_DEFAULTS = dict(vgg='<data-dir>/demo/vgg, built with random weights if absent', epochs=15, batch_size=8,
                     learning_rate=3e-4, keep_prob=1.0, image_shape=[96, 320], skip_scales=[1.0, 1.0], augment=False)


def build_parser():
    parser = argparse.ArgumentParser(description='FCN-8 road segmentation (KITTI Road, VGG16).')
    commands = parser.add_subparsers(dest='command')
    train_parser = commands.add_parser('train', help='train on KITTI Road (the default command)')
    _add_training_flags(train_parser, TRAIN_DEFAULTS)
    train_parser.add_argument('--dataset', choices=('auto', 'kitti', 'camvid'), default='auto',
                              help='the layout of --data-dir; auto: camvid if it has train/, trainannot/, val/, '
                                   'valannot/, else KITTI (default: %(default)s)')
    train_parser.add_argument('--classes', choices=('road', 'all'), default='road',
                              help='road: road vs the rest; all: every CamVid class, with per-class IoU and a '
                                   'colour palette in the overlays (default: %(default)s)')
    train_parser.add_argument('--val-fraction', type=float, default=DEFAULT_VAL_FRACTION,
                              help='share of each KITTI category held out for validation (default: 1/6)')
    train_parser.add_argument('--resume', metavar='RUN_DIR', default=None,
                              help='continue that run from its last checkpoint (same split and settings; '
                                   '--epochs may raise the total)')
    train_parser.add_argument('--vgg-source', choices=helper.VGG_SOURCES, default='udacity',
                              help="where to get VGG16 if <data-dir>/vgg is absent: Udacity's vgg.zip (falling back "
                                   "to keras when it fails) or Keras' ImageNet weights (default: %(default)s)")
    train_parser.add_argument('--kitti-url', default=None,
                              help='the data_road.zip link KITTI mails you: downloaded and unpacked if KITTI is absent')
    demo_parser = commands.add_parser('demo', help='offline demo on a generated road dataset')
    _add_training_flags(demo_parser, DEMO_DEFAULTS)
    evaluate_parser = commands.add_parser('evaluate', help='KITTI road metrics of a trained model')
    evaluate_parser.add_argument('--model', required=True, help='a run folder, or its export/ folder')
    evaluate_parser.add_argument('--data-dir', default='data',
                                 help='evaluates every labelled image of <data-dir>/data_road/training')
    evaluate_parser.add_argument('--json', action='store_true', help='also print one JSON object, last')
    infer_parser = commands.add_parser('infer', help='road overlays of new images')
    infer_parser.add_argument('--model', required=True, help='a run folder, or its export/ folder')
    infer_parser.add_argument('inputs', nargs='+', metavar='INPUT', help='image files, folders or glob patterns')
    infer_parser.add_argument('--out', default=None, help='output folder (default: runs/<timestamp>)')
    infer_parser.add_argument('--masks', action='store_true',
                              help='also write the road probability as an 8-bit PNG (<name>_road.png)')
    commands.add_parser('bench', add_help=False,
                        help='speed benchmark: data pipelines, training, inference, FLOP ratios '
                             '(python main.py bench --help)')
    return parser


def parse_args(argv):
    argv = list(argv)
    if not argv or argv[0].startswith('-') and argv[0] not in ('-h', '--help'):
        argv.insert(0, 'train')
    args = build_parser().parse_args(argv)
    args.epochs_given = '--epochs' in argv
    if args.command in ('train', 'demo'):
        validate_training_args(args)
    return args


def validate_training_args(args):
    problems = []
    if any(side <= 0 or side % OUTPUT_MULTIPLE for side in args.image_shape):
        problems.append('--image-shape %d %d: both sides must be positive multiples of %d (e.g. 160 576)'
                        % (tuple(args.image_shape) + (OUTPUT_MULTIPLE,)))
    if args.epochs < 1:
        problems.append('--epochs must be >= 1')
    if args.batch_size < 1:
        problems.append('--batch-size must be >= 1')
    if not 0 < args.keep_prob <= 1:
        problems.append('--keep-prob must be in (0, 1]')
    if not args.learning_rate > 0:
        problems.append('--learning-rate must be > 0')
    if getattr(args, 'classes', 'road') == 'all' and getattr(args, 'dataset', 'kitti') == 'kitti':
        problems.append('--classes all needs a CamVid dataset (KITTI Road labels only road)')
    if not 0 <= getattr(args, 'val_fraction', 0) < 1:
        problems.append('--val-fraction must be in [0, 1)')
    if problems:
        raise SystemExit('main.py: ' + '; '.join(problems))
    args.image_shape = tuple(args.image_shape)


def evaluate_command(args):
    """python main.py evaluate: a table of the KITTI metrics (and JSON with --json).

    On KITTI every labelled training image is evaluated; on CamVid the val
    split, with per-class IoU for a model trained on all classes.
    """
    if helper.is_camvid(args.data_dir):
        pairs = helper.camvid_pairs(args.data_dir, 'val')
        exported = helper.ExportedModel(resolve_export_dir(args.model))
        classes = 'all' if exported.road_class == helper.CAMVID_ROAD else 'road'
        exported.close()
        decoder = helper.LABEL_FORMATS[('camvid', classes)][0]
    else:
        data_road = helper.maybe_download_kitti(args.data_dir)
        pairs, decoder = helper.kitti_road_pairs(os.path.join(data_road, 'training')), helper.kitti_label_to_onehot
    metrics, class_iou = evaluate_model(args.model, pairs, decoder)
    results = dict({'all': metrics.result()}, **metrics.per_category())
    print(road_metrics.format_table(results))
    if class_iou:
        print('\n'.join('IoU %-10s %6.2f%%' % (name, 100 * iou)
                        for name, iou in zip(helper.CAMVID_CLASS_NAMES, class_iou.per_class())))
        print('mean class IoU %.2f%%' % (100 * class_iou.mean()))
    if args.json:
        print(json.dumps({key: results['all'][key] for key in EVALUATE_JSON_KEYS}))


def infer_command(args):
    """python main.py infer: overlays (and masks) of images, at their own size; unreadable ones are listed."""
    paths = helper.expand_image_inputs(args.inputs)
    out_dir = args.out or helper.new_run_dir('runs')
    os.makedirs(out_dir, exist_ok=True)
    failed = []

    def report_unreadable(path, error):
        failed.append(path)
        tqdm.write('skipped %s: %s' % (path, error))

    exported = helper.ExportedModel(resolve_export_dir(args.model))
    try:
        written = helper.write_predictions(exported, paths, out_dir, args.masks, report_unreadable)
    finally:
        exported.close()
    print('infer: %d overlays in %s%s' % (written, out_dir, '; %d unreadable input(s) skipped' % len(failed)
                                          if failed else ''))
    if failed:
        raise SystemExit(1)


EVALUATE_JSON_KEYS = ('iou', 'maxf', 'ap', 'precision', 'recall', 'fpr', 'fnr', 'images')
JOBS = {'train': train, 'demo': demo, 'evaluate': evaluate_command, 'infer': infer_command}


def set_up_process(args):
    """Process-wide speed settings, before the first Session: see tune_malloc and cache_kernel_layouts."""
    if args.command in ('evaluate', 'infer'):
        cache_kernel_layouts()
        return
    check_weights_not_frozen()
    if not args.plain_malloc:
        tune_malloc()


def run(argv=None, own_process=False):
    """The command line. `own_process`: main.py is the program, so process-wide settings may be made.

    (Called from other code, e.g. the tests, run changes nothing beyond its job.)
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ['bench']:
        import bench  # here, not at the top: bench imports this module
        bench.main(argv[1:])
        return
    args = parse_args(argv)
    try:
        if own_process:
            set_up_process(args)
        JOBS[args.command](args)
    except (helper.DatasetError, helper.DownloadError, VGGModelError, FloatingPointError,
            run_folder.RunFolderError, ProcessSettingError) as error:
        raise SystemExit('main.py %s: %s' % (args.command, error))


if __name__ == '__main__':
    run(own_process=True)
