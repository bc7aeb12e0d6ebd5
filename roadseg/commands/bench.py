"""Speed benchmark of the FCN-8 road segmenter, with no download.

    python main.py bench [--image-shape H W] [--batch-size B] [--data-dir D] [--json] [--mixed-precision]

It measures
  * the data pipelines, in images/s of ready batches of the recipe's size (8):
    the classic one (every PNG read and resized again for every batch, as the
    classic exercise's gen_batch_function did) and this project's
    helper.gen_batch_function (decoded once, then batches from memory; its
    one-off decode is shown apart), without augmentation and with the KITTI
    recipe's (what `train` uses), the latter also at Cityscapes' input size;
    on the KITTI images under --data-dir, else on generated 1242x375 PNGs;
  * a training step (every layer trainable, Adam, feed_dict, as roadseg/training/loop.py
    runs it) and an inference step (forward to the softmax) of the full-width
    VGG16 FCN-8 (random weights, written to a temporary folder by a child
    process), after warm-up, each timed for at least --min-seconds;
  * numpy's float32 matrix product (n x n by n x n, best of a few), the
    yardstick of the FLOP ratios, and TensorFlow's own, a second one;
  * the model's FLOPs per image, counted from the graph (see count_flops), and
    the peak resident memory of the process.
All of that in this one process. Then the same weights are exported and
timed as `main.py infer` runs them, in a process of their own: only a
process that never trains may let oneDNN keep its converted kernels. Last,
that export is converted to ONNX (as `main.py export` converts it) and timed
in onnxruntime, as `main.py infer --model F.onnx` runs it, in a third process.

With --json the last line is one JSON object with pipeline_classic_ips,
pipeline_ips, pipeline_augmented_ips, pipeline_augmented_ips_cityscapes, train_ips, infer_ips, exported_ips, onnx_ips, train_flops_ratio,
infer_flops_ratio, peak_rss_mb and a few more keys.
"""
import argparse
import importlib
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime

from roadseg import config, process
from roadseg import model as fcn8
from roadseg.config import ModelInfo
from roadseg.data import batches, datasets, roadgen
from roadseg.errors import DatasetError
from roadseg.process import graph_mode_tf
from roadseg.serving import inference, onnx_export, onnx_model
from roadseg.training import fit

tf = graph_mode_tf()

KITTI_IMAGE_SHAPE = (375, 1242)
GENERATED_IMAGES = 24
# The classic training settings.
LEARNING_RATE = config.KITTI_RECIPE['learning_rate']
KEEP_PROB = config.KITTI_RECIPE['keep_prob']
# Untimed steps first: the first ones create oneDNN's primitives, and until
# the third training step the heap still grows (page faults; see process.tune_malloc).
TRAIN_WARMUP_STEPS = 3
INFER_WARMUP_STEPS = 2
MATMUL_REPEATS = 4
MIN_TIMED_STEPS = 3
PIPELINE_SHARE = 0.2  # each pipeline is timed for this share of --min-seconds
# The pipelines are timed on batches of the recipe's size; the augmented ones with the recipes' augmentation.
PIPELINE_BATCH_SIZE = config.KITTI_RECIPE['batch_size']
RECIPE_AUGMENTATION = batches.Augmentation(config.KITTI_RECIPE['zoom'], config.KITTI_RECIPE['color_jitter'])
CITYSCAPES_AUGMENTATION = batches.Augmentation(config.CITYSCAPES_RECIPE['zoom'],
                                               config.CITYSCAPES_RECIPE['color_jitter'])
BUSY_MACHINE_SHARE = 0.05
SLOW_NUMPY_SHARE = 0.8  # below this share of TensorFlow's matmul rate, numpy's is called out
FLOP_COUNTED_OPS = ('Conv2D', 'Conv2DBackpropInput', 'Conv2DBackpropFilter', 'MatMul')
# The bars, for a float32 full-width model at 160x576, batch 2, on the 2-core development machine.
BAR_SETTINGS = {'image_shape': [160, 576], 'batch_size': 2, 'vgg_width': 1.0, 'precision': 'float32'}
BARS = (('pipeline_ips', 1000), ('pipeline_augmented_ips', 1000), ('pipeline_speedup', 20), ('train_flops_ratio', 0.6), ('infer_flops_ratio', 0.9))
BAR_MAX_RSS_MB = 6000


# --------------------------------------------------------------------------- the machine and the process

class OtherCpuLoad:
    """Share of the machine's CPU time taken by other processes (and the hypervisor) while the block runs.

    Read from /proc/stat; `share` stays None where that does not exist.
    """

    def __enter__(self):
        self.started = self._counters()
        self.share = None
        return self

    def __exit__(self, *exc):
        ended = self._counters()
        if self.started and ended:
            total, busy, mine = (end - start for start, end in zip(self.started, ended))
            self.share = max(0.0, (busy - mine) / total) if total else 0.0

    @staticmethod
    def _counters():
        """(all jiffies, busy jiffies, this process's jiffies) or None."""
        try:
            with open('/proc/stat') as stat:
                jiffies = [int(value) for value in stat.readline().split()[1:9]]
        except OSError:
            return None
        times = os.times()
        idle = jiffies[3] + jiffies[4]
        mine = times.user + times.system + times.children_user + times.children_system  # children: the bench's own
        return sum(jiffies), sum(jiffies) - idle, mine * os.sysconf('SC_CLK_TCK')


def peak_rss_mb():
    """This process's peak resident memory in MB.

    /proc's VmHWM where it exists: getrusage's ru_maxrss survives exec on
    Linux, so a child started by a 5 GB parent would report the parent's peak.
    """
    try:
        with open('/proc/self/status') as status:
            for line in status:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- FLOPs

def ops_run_by(fetches):
    """Every operation that a Session.run of `fetches` executes (inputs and control inputs, transitively)."""
    pending = [getattr(fetch, 'op', fetch) for fetch in fetches]
    seen = set()
    while pending:
        op = pending.pop()
        if op not in seen:
            seen.add(op)
            pending.extend(tensor.op for tensor in op.inputs)
            pending.extend(op.control_inputs)
    return seen


def _flop_operands(op):
    """Tensors whose run-time values give the FLOPs of `op`.

    Convolutions: (kernel shape [KH, KW, C_in, C_out], shape of the map the
    kernel is applied at). That map is the forward convolution's output,
    which for both gradients is their `out_backprop` input; for a transposed
    convolution (Conv2DBackpropInput) it is the small map being upsampled.
    MatMul: the shapes of its two operands.
    """
    if op.type == 'Conv2D':
        return tf.shape(op.inputs[1]), tf.shape(op.outputs[0])
    if op.type == 'Conv2DBackpropInput':
        return tf.shape(op.inputs[1]), tf.shape(op.inputs[2])
    if op.type == 'Conv2DBackpropFilter':
        return op.inputs[1], tf.shape(op.inputs[2])
    return tf.shape(op.inputs[0]), tf.shape(op.inputs[1])


def _op_flops(op, operands):
    """2 x multiply-adds of one op, from the values of its `_flop_operands`."""
    if op.type == 'MatMul':
        (a_rows, a_cols), (b_rows, b_cols) = (map(int, shape) for shape in operands)
        rows, inner = (a_cols, a_rows) if op.get_attr('transpose_a') else (a_rows, a_cols)
        cols = b_rows if op.get_attr('transpose_b') else b_cols
        return 2 * rows * inner * cols
    kernel_shape, map_shape = ([int(d) for d in shape] for shape in operands)
    channel_axis = 1 if op.get_attr('data_format') == b'NCHW' else -1
    positions = math.prod(map_shape) // map_shape[channel_axis]
    return 2 * math.prod(kernel_shape) * positions


def count_flops(sess, fetches, feed_dict):
    """FLOPs of one Session.run of `fetches` with `feed_dict`, counted from the graph.

    The sum over the Conv2D, Conv2DBackpropInput, Conv2DBackpropFilter and
    MatMul ops that the run executes of 2 x multiply-adds: for a convolution
    2*KH*KW*C_in*C_out per position of the map its kernel is applied at (see
    _flop_operands), for a matrix product 2*M*K*N. Shapes are read from a real
    run with this feed, so dynamic shapes count exactly (the TF profiler's
    static count misses them). Kernel taps that fall on SAME zero padding
    count, as is the convention; elementwise ops (ReLU, bias, Adam) do not.
    The run executes the forward and backward ops only, never an update.
    """
    ops = sorted((op for op in ops_run_by(fetches) if op.type in FLOP_COUNTED_OPS), key=lambda op: op.name)
    operands = sess.run([_flop_operands(op) for op in ops], feed_dict)
    return sum(_op_flops(op, values) for op, values in zip(ops, operands))


def _best_seconds(run, repeats):
    """The shortest wall time of `repeats` calls of `run`, after one untimed call."""
    run()
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def matmul_flops_per_second(size=4096, repeats=MATMUL_REPEATS):
    """Best float32 FLOP/s of numpy's size x size by size x size product (2*size^3 FLOPs each)."""
    rng = np.random.default_rng(0)
    a, b = (rng.random((size, size), dtype=np.float32) for _ in range(2))
    out = np.empty_like(a)
    return 2 * size ** 3 / _best_seconds(lambda: np.matmul(a, b, out=out), repeats)


def onednn_matmul_flops_per_second(size=4096, repeats=MATMUL_REPEATS):
    """The same product as TensorFlow's own MatMul (oneDNN) in a Session: the second yardstick.

    numpy's BLAS does not always use a CPU's widest vector units (OpenBLAS
    takes its AVX2 kernel on Zen 5, see docs/performance.md), so ratios to numpy alone
    would overstate how close the model comes to the machine's rate.
    """
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as sess:
        # Variables, not constants: grappler would fold a product of constants before the timing.
        a, b = (tf.Variable(tf.random.uniform((size, size), seed=seed)) for seed in (1, 2))
        sess.run(tf.global_variables_initializer())
        # Fetching one element keeps the 64 MB result's copy out of the timing; the product still runs whole.
        corner = tf.matmul(a, b)[0, 0]
        return 2 * size ** 3 / _best_seconds(lambda: sess.run(corner), repeats)


# --------------------------------------------------------------------------- data pipelines

def classic_batches(pairs, image_shape, batch_size, rng):
    """One epoch the classic way: every image and label read and resized again for each batch."""
    order = rng.permutation(len(pairs))
    for start in range(0, len(order), batch_size):
        loaded = [batches.load_training_pair(*pairs[i], image_shape) for i in order[start:start + batch_size]]
        yield np.stack([image for image, _ in loaded]), np.stack([label for _, label in loaded])


def epochs_per_second(run_epoch, min_seconds):
    """Images/s of ready batches over whole epochs (at least one), for at least `min_seconds`."""
    images, started = 0, time.perf_counter()
    while not images or time.perf_counter() - started < min_seconds:
        images += sum(len(batch_images) for batch_images, _ in run_epoch())
    return images / (time.perf_counter() - started)


def measure_pipelines(training_folder, image_shape, min_seconds):
    """The pipelines' figures (classic, decoded once without and with the recipe's augmentation, the latter at
    image_shape and at Cityscapes' input size) and the augmented get_batches_fn, the one training uses."""
    pairs = datasets.kitti_road_pairs(training_folder)
    rng = np.random.default_rng(0)
    figures = {'pipeline_classic_ips': epochs_per_second(
        lambda: classic_batches(pairs, image_shape, PIPELINE_BATCH_SIZE, rng), min_seconds)}
    started = time.perf_counter()
    plain = batches.TrainingBatches(pairs, image_shape)
    figures['decode_once_s'] = time.perf_counter() - started
    figures['pipeline_ips'] = epochs_per_second(lambda: plain(PIPELINE_BATCH_SIZE), min_seconds)
    augmented = batches.TrainingBatches(pairs, image_shape, augment=True, augmentation=RECIPE_AUGMENTATION)
    figures['pipeline_augmented_ips'] = epochs_per_second(lambda: augmented(PIPELINE_BATCH_SIZE), min_seconds)
    cityscapes = batches.TrainingBatches(pairs, config.CITYSCAPES_RECIPE['image_shape'], augment=True,
                                         augmentation=CITYSCAPES_AUGMENTATION)
    figures['pipeline_augmented_ips_cityscapes'] = epochs_per_second(lambda: cityscapes(PIPELINE_BATCH_SIZE),
                                                                     min_seconds)
    figures.update(pipeline_threads=augmented.threads, pipeline_batch_size=PIPELINE_BATCH_SIZE,
                   images=augmented.num_images,
                   pipeline_speedup=figures['pipeline_ips'] / figures['pipeline_classic_ips'])
    return figures, augmented


def full_batches(get_batches_fn, batch_size):
    """Endless batches of exactly `batch_size` images, cycling through the shuffled epochs."""
    pending = []
    while True:
        for pair in get_batches_fn(1):
            pending.append(pair)
            if len(pending) == batch_size:
                yield tuple(np.concatenate(parts) for parts in zip(*pending))
                pending = []


# --------------------------------------------------------------------------- model

def seconds_per_step(step, warmup_steps, min_seconds):
    """Mean wall time of `step` after `warmup_steps`, over at least MIN_TIMED_STEPS and `min_seconds`."""
    for _ in range(warmup_steps):
        step()
    steps, started = 0, time.perf_counter()
    while steps < MIN_TIMED_STEPS or time.perf_counter() - started < min_seconds:
        step()
        steps += 1
    return (time.perf_counter() - started) / steps


def measure_model(vgg_path, batches, min_seconds, checkpoint_prefix, xla=False, mixed_precision=False):
    """FLOPs per step and seconds per step of training and of inference, on `batches`.

    The weights are then saved at `checkpoint_prefix`, for time_exported_model.
    """
    graph = tf.Graph()
    if xla:
        process.let_xla_cluster_on_cpu()
    session_options = fit.session_config(xla=xla, mixed_precision=mixed_precision)
    with graph.as_default(), tf.Session(graph=graph, config=session_options) as sess:
        model = fcn8.build_fcn8(sess, vgg_path, fcn8.NUM_CLASSES, mixed_precision=mixed_precision)
        probabilities = tf.nn.softmax(model.output)

        def train_feed():
            images, labels = next(batches)
            return {model.image_input: images, model.correct_label: labels, model.keep_prob: KEEP_PROB,
                    model.learning_rate: LEARNING_RATE}

        def infer_feed():
            return {model.image_input: next(batches)[0]}

        # The counting runs also create the oneDNN primitives (the slow first steps).
        flops = {'forward': count_flops(sess, [probabilities], infer_feed()),
                 'train': count_flops(sess, [model.train_op], train_feed())}
        sess.run(model.train_op, train_feed())
        process.settle_malloc()  # as train_nn does after its first step
        # Inference first: its buffers are a subset of training's, which then reuses them.
        infer_step_s = seconds_per_step(lambda: sess.run(probabilities, infer_feed()), INFER_WARMUP_STEPS,
                                        min_seconds)
        # Only the train_op is fetched: nothing but the weights changes.
        train_step_s = seconds_per_step(lambda: sess.run(model.train_op, train_feed()), TRAIN_WARMUP_STEPS,
                                        min_seconds)
        tf.train.Saver(tf.trainable_variables()).save(sess, checkpoint_prefix, write_meta_graph=False)
    return flops, train_step_s, infer_step_s


def timing_images(image_shape, batch_size):
    """The batch the exported and the ONNX model are timed on: random uint8 images of `image_shape`."""
    return list(np.random.default_rng(0).integers(0, 256, (batch_size,) + tuple(image_shape) + (3,), np.uint8))


def bench_model_info(image_shape):
    """What the bench's exported model says it was trained on: KITTI road, at `image_shape`."""
    return ModelInfo('kitti', 'road', datasets.ROAD_CLASSES, 1, tuple(image_shape))


def time_exported_model(checkpoint_prefix, vgg_path, export_dir, image_shape, batch_size, min_seconds):
    """Seconds per batch of the exported model, run as main.py infer runs it; and this process's peak memory.

    Exports the checkpoint (untimed), then times ExportedModel calls on
    uint8 images of `image_shape`. main.py's evaluate and infer let oneDNN
    keep each kernel in its own layout (process.cache_kernel_layouts), which
    only a process that never trains may do: run this in a process of its
    own (see measure_exported_model_apart).
    """
    process.cache_kernel_layouts()
    info = bench_model_info(image_shape)
    inference.export_inference_model(checkpoint_prefix, export_dir, vgg_path, info, config.AT_ONCE_SKIP_SCALES)
    exported = inference.ExportedModel(export_dir)
    images = timing_images(image_shape, batch_size)
    try:
        step_s = seconds_per_step(lambda: exported(images), INFER_WARMUP_STEPS, min_seconds)
    finally:
        exported.close()
    return step_s, peak_rss_mb()


def time_onnx_model(onnx_path, image_shape, batch_size, min_seconds):
    """Seconds per batch of an ONNX model run by onnxruntime, as main.py infer --model F.onnx runs it.

    Times OnnxModel calls on the images time_exported_model uses. (This process has imported TensorFlow, as
    bench.py does, but never starts a session.)
    """
    predict = onnx_model.OnnxModel(onnx_path)
    images = timing_images(image_shape, batch_size)
    try:
        return seconds_per_step(lambda: predict(images), INFER_WARMUP_STEPS, min_seconds)
    finally:
        predict.close()


EXPORTED_MODEL_COMMAND = '_time-exported-model'
CHILD_TIMEOUT = 3600  # seconds: a child that hangs fails the bench instead of stalling it
ONNX_MODEL_COMMAND = '_time-onnx-model'


def _in_child_process(command, *argv):
    """This module's `command` argv in a child process: the JSON it prints last."""
    finished = process.run_module_apart('roadseg.commands.bench', command, *argv, capture_output=True, text=True,
                                        timeout=CHILD_TIMEOUT)
    if finished.returncode:
        raise RuntimeError('%s failed with exit status %d%s:\n%s' % (
            command, finished.returncode, ' (killed by a signal: out of memory?)' if finished.returncode < 0 else '',
            finished.stderr[-3000:]))
    return json.loads(finished.stdout.strip().splitlines()[-1])


def measure_exported_model_apart(checkpoint_prefix, vgg_path, scratch, image_shape, batch_size, min_seconds):
    """time_exported_model in a child process, exporting to scratch/export: (seconds per batch, the child's peak
    memory in MB)."""
    return tuple(_in_child_process(EXPORTED_MODEL_COMMAND, checkpoint_prefix, vgg_path, os.path.join(scratch, 'export'),
                                   *image_shape, batch_size, min_seconds))


def measure_onnx_model_apart(scratch, image_shape, batch_size, min_seconds):
    """scratch/export (see measure_exported_model_apart) converted as main.py export converts it (untimed), then
    time_onnx_model in a child process: seconds per batch."""
    onnx_path = os.path.join(scratch, 'model.onnx')
    onnx_export.convert_apart(os.path.join(scratch, 'export'), onnx_path)
    return _in_child_process(ONNX_MODEL_COMMAND, onnx_path, *image_shape, batch_size, min_seconds)


def _exported_model_command(argv):
    checkpoint_prefix, vgg_path, export_dir, height, width, batch_size, min_seconds = argv
    print(json.dumps(time_exported_model(checkpoint_prefix, vgg_path, export_dir, (int(height), int(width)),
                                         int(batch_size), float(min_seconds))))


def _onnx_model_command(argv):
    onnx_path, height, width, batch_size, min_seconds = argv
    print(json.dumps(time_onnx_model(onnx_path, (int(height), int(width)), int(batch_size), float(min_seconds))))


CHILD_COMMANDS = {EXPORTED_MODEL_COMMAND: _exported_model_command, ONNX_MODEL_COMMAND: _onnx_model_command}


# --------------------------------------------------------------------------- the bench

def write_random_vgg_apart(export_dir, width):
    """Write the random VGG16 in a child process, so the peak memory is that of training from a model on disk.

    As in `main.py train`, this process then only loads it: writing it here would leave freed heap behind
    that the tuned malloc keeps.
    """
    process.run_module_apart('roadseg.vgg_builder', 'random', export_dir, '--width', width, check=True,
                             stdout=subprocess.DEVNULL, timeout=CHILD_TIMEOUT)
    return export_dir


def training_folder_for(args, scratch):
    """The KITTI training folder under --data-dir, or a generated one in `scratch`."""
    if args.data_dir:
        return os.path.join(args.data_dir, 'data_road', 'training')
    progress('generating %d road images of %dx%d' % ((args.images,) + KITTI_IMAGE_SHAPE[::-1]))
    data_road = roadgen.generate_dataset(scratch, n_train=args.images, n_test=1, image_shape=KITTI_IMAGE_SHAPE)
    return os.path.join(data_road, 'training')


def progress(message):
    print('bench: %s' % message, file=sys.stderr, flush=True)


def run_bench(args):
    """Measure everything; returns the results as a flat dict (the JSON object)."""
    results = {'malloc_tuned': False if args.plain_malloc else process.tune_malloc()}
    with OtherCpuLoad() as load, tempfile.TemporaryDirectory(prefix='fcn8-bench-') as scratch:
        progress('float32 matmul %d^3, numpy and TensorFlow' % args.matmul_size)
        yardsticks = matmul_flops_per_second(args.matmul_size), onednn_matmul_flops_per_second(args.matmul_size)
        training_folder = training_folder_for(args, scratch)
        progress('data pipelines on %s' % training_folder)
        pipelines, get_batches_fn = measure_pipelines(training_folder, args.image_shape,
                                                      args.min_seconds * PIPELINE_SHARE)
        progress('writing a VGG16 of width %g with random weights' % args.width)
        vgg_path = write_random_vgg_apart(os.path.join(scratch, 'vgg'), args.width)
        progress('training and inference, at least %gs each' % args.min_seconds)
        checkpoint_prefix = os.path.join(scratch, 'checkpoint', 'weights')
        flops, train_step_s, infer_step_s = measure_model(
            vgg_path, full_batches(get_batches_fn, args.batch_size), args.min_seconds, checkpoint_prefix, args.xla,
            args.mixed_precision)
        progress('the exported model as main.py infer runs it, in a process of its own')
        exported_step_s, exported_peak_mb = measure_exported_model_apart(
            checkpoint_prefix, vgg_path, scratch, args.image_shape, args.batch_size, args.min_seconds)
        progress('that export converted to ONNX and run by onnxruntime, in a process of its own')
        onnx_step_s = measure_onnx_model_apart(scratch, args.image_shape, args.batch_size, args.min_seconds)
        results.update(deployed_forms(args, scratch, training_folder))
    results.update(pipelines)
    results.update(
        forward_gflop_per_image=flops['forward'] / args.batch_size / 1e9,
        train_gflop_per_image=flops['train'] / args.batch_size / 1e9,
        matmul_gflops=yardsticks[0] / 1e9, onednn_matmul_gflops=yardsticks[1] / 1e9,
        exported_peak_rss_mb=exported_peak_mb, peak_rss_mb=peak_rss_mb(), other_cpu_load=load.share,
        precision='bfloat16 mixed' if args.mixed_precision else 'float32', xla=args.xla,
        image_shape=list(args.image_shape), batch_size=args.batch_size, vgg_width=args.width,
        data=args.data_dir or 'generated')
    for kind, step_flops, step_s in (('train', flops['train'], train_step_s),
                                     ('infer', flops['forward'], infer_step_s),
                                     ('exported', flops['forward'], exported_step_s),
                                     ('onnx', flops['forward'], onnx_step_s)):
        results.update(speed_figures(kind, step_flops, step_s, args.batch_size, yardsticks))
    results['bars_missed'] = missed_bars(results)
    return results


def deployed_forms(args, scratch, training_folder):
    """The deployed forms' figures (commands/bench_forms.py), unless --no-forms."""
    if args.no_forms:
        return {}
    return importlib.import_module('roadseg.commands.bench_forms').measure_forms(
        scratch, training_folder, args.image_shape, args.batch_size, args.min_seconds)


def speed_figures(kind, step_flops, step_s, batch_size, yardsticks):
    """<kind>_ips, _step_s, _gflops and the FLOP rate as a fraction of numpy's and of TensorFlow's matmul."""
    numpy_flops, onednn_flops = yardsticks
    return {kind + '_ips': batch_size / step_s, kind + '_step_s': step_s, kind + '_gflops': step_flops / step_s / 1e9,
            kind + '_flops_ratio': step_flops / step_s / numpy_flops,
            kind + '_flops_ratio_onednn': step_flops / step_s / onednn_flops}


def missed_bars(results):
    """Names of the issue's bars that these results miss, or None when run at other settings than the bars'."""
    if any(results[key] != value for key, value in BAR_SETTINGS.items()):
        return None
    missed = [name for name, bar in BARS if results[name] < bar]
    return missed + (['peak_rss_mb'] if results['peak_rss_mb'] >= BAR_MAX_RSS_MB else [])


def _model_row(what, results, kind):
    """A table row for 'train', 'infer', 'exported' or 'onnx'."""
    return (what, '%.2f images/s' % results[kind + '_ips'],
            '%.3gs/step, %.3g GFLOP/s = %.2f x numpy matmul, %.2f x TensorFlow matmul' % (
                results[kind + '_step_s'], results[kind + '_gflops'], results[kind + '_flops_ratio'],
                results[kind + '_flops_ratio_onednn']))


def pipeline_rows(results):
    """The table's rows for the data pipelines; the one marked is what `train` runs."""
    return [
        ('data, classic (read + resize every batch)', '%.1f images/s' % results['pipeline_classic_ips'],
         'over %d training images, batches of %d' % (results['images'], results['pipeline_batch_size'])),
        ('data, decoded once, augmentation off', '%.0f images/s' % results['pipeline_ips'],
         '%.0fx classic; one-off decode %.2fs' % (results['pipeline_speedup'], results['decode_once_s'])),
        ('data, decoded once, augmented: what train uses', '%.0f images/s' % results['pipeline_augmented_ips'],
         "the KITTI recipe's flips, zoom %g-%g, colour jitter %g; %d threads" % (
             *RECIPE_AUGMENTATION.zoom, RECIPE_AUGMENTATION.color, results['pipeline_threads'])),
        ('  the same at Cityscapes\' input size', '%.0f images/s' % results['pipeline_augmented_ips_cityscapes'],
         '%dx%d, the Cityscapes recipe\'s augmentation' % tuple(config.CITYSCAPES_RECIPE['image_shape'])),
    ]


def format_table(results):
    """The human-readable report (a list of lines)."""
    forward, train = results['forward_gflop_per_image'], results['train_gflop_per_image']
    rows = pipeline_rows(results) + [
        _model_row('training step (all layers, Adam)', results, 'train'),
        _model_row('inference (forward to softmax)', results, 'infer'),
        _model_row('exported model (float32), as main.py infer runs it', results, 'exported'),
        _model_row('the same as ONNX, onnxruntime %s (float32)' % onnxruntime.__version__, results, 'onnx'),
        ('numpy float32 matmul', '%.0f GFLOP/s' % results['matmul_gflops'], 'best of %d' % MATMUL_REPEATS),
        ('TensorFlow (oneDNN) float32 matmul', '%.0f GFLOP/s' % results['onednn_matmul_gflops'],
         'best of %d' % MATMUL_REPEATS),
        ('model FLOPs per image', '%.3g GFLOP forward' % forward,
         '%.3g GFLOP per training step (%.2f x forward)' % (train, train / forward)),
        ('peak resident memory', '%.0f MB' % results['peak_rss_mb'],
         '%s; the exported model\'s process: %.0f MB' % ('malloc tuned' if results['malloc_tuned'] else 'plain malloc',
                                                        results['exported_peak_rss_mb'])),
    ]
    title = 'FCN-8 bench: VGG16 width %g, %dx%d, batch %d, %s%s, data: %s' % (
        results['vgg_width'], *results['image_shape'], results['batch_size'], results['precision'],
        ', XLA' if results['xla'] else '', results['data'])
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    lines = [title] + ['  %-*s  %*s  %s' % (widths[0], what, widths[1], figure, note) for what, figure, note in rows]
    lines += importlib.import_module('roadseg.commands.bench_forms').form_lines(results)
    if results['other_cpu_load'] is not None and results['other_cpu_load'] > BUSY_MACHINE_SHARE:
        lines.append('  WARNING: other processes took %.0f%% of the CPU during the bench; the figures are low.'
                     % (100 * results['other_cpu_load']))
    if results['matmul_gflops'] < SLOW_NUMPY_SHARE * results['onednn_matmul_gflops']:
        lines.append("  NOTE: numpy's BLAS reaches only %.0f%% of TensorFlow's matmul on this CPU; the ratios to "
                     "TensorFlow's are the truer ones." % (100 * results['matmul_gflops'] /
                                                          results['onednn_matmul_gflops']))
    if results['bars_missed'] is None:
        lines.append("  (the issue's bars are for float32, full width, 160x576, batch 2: not checked)")
    else:
        lines.append("  the issue's bars: %s" % ('missed ' + ', '.join(results['bars_missed'])
                                               if results['bars_missed'] else 'all met'))
    return lines


def parse_args(argv):
    parser = argparse.ArgumentParser(description='Speed of the data pipelines, training and inference of FCN-8.')
    parser.add_argument('--image-shape', type=int, nargs=2, metavar=('H', 'W'), default=[160, 576],
                        help='network input size, multiples of %d (default: %%(default)s)' % config.OUTPUT_MULTIPLE)
    parser.add_argument('--batch-size', type=int, default=2,
                        help='images per model step (default: %%(default)s; the data pipelines are timed on '
                             "the recipe's batches of %d)" % PIPELINE_BATCH_SIZE)
    parser.add_argument('--data-dir', default=None,
                        help='a folder holding KITTI data_road/training (default: generate %d images of %dx%d)'
                             % ((GENERATED_IMAGES,) + KITTI_IMAGE_SHAPE[::-1]))
    parser.add_argument('--json', action='store_true', help='end with one line of JSON holding every figure')
    parser.add_argument('--mixed-precision', action='store_true',
                        help="the model in main.py's mixed precision (bfloat16 on this CPU): the ratios are then "
                             "not float32 figures")
    parser.add_argument('--xla', action='store_true', help="the model with main.py's --xla session option")
    parser.add_argument('--min-seconds', type=float, default=10.0,
                        help='time training and inference for at least this long each, the pipelines for a fifth '
                             'of it (default: %(default)s)')
    parser.add_argument('--no-forms', action='store_true',
                        help='skip the deployed forms (SavedModel, ONNX float32 and int8, TFLite float16 and int8 at '
                             '%dx%d and the input size, with their MaxF): they take a few minutes' % KITTI_IMAGE_SHAPE)
    parser.add_argument('--plain-malloc', action='store_true',
                        help="leave glibc's malloc settings alone (to see what process.tune_malloc brings)")
    hidden_flags = (('--width', float, 1.0), ('--matmul-size', int, 4096), ('--images', int, GENERATED_IMAGES))
    for hidden, kind, default in hidden_flags:
        parser.add_argument(hidden, type=kind, default=default, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    problems = validate(args)
    if problems:
        parser.exit(2, 'bench.py: %s\n' % '; '.join(problems))
    args.image_shape = tuple(args.image_shape)
    return args


def validate(args):
    problems = []
    if any(side <= 0 or side % config.OUTPUT_MULTIPLE for side in args.image_shape):
        problems.append('--image-shape %d %d: both sides must be positive multiples of %d'
                        % (tuple(args.image_shape) + (config.OUTPUT_MULTIPLE,)))
    if args.batch_size < 1:
        problems.append('--batch-size must be >= 1')
    if args.min_seconds <= 0 or args.images < 1 or args.width <= 0 or args.matmul_size < 1:
        problems.append('--min-seconds, --width, --matmul-size and --images must be positive')
    if args.data_dir:
        try:
            datasets.kitti_road_pairs(os.path.join(args.data_dir, 'data_road', 'training'))
        except DatasetError as error:
            problems.append('--data-dir %s: %s' % (args.data_dir, str(error).splitlines()[0]))
    return problems


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] and argv[0] in CHILD_COMMANDS:
        return CHILD_COMMANDS[argv[0]](argv[1:])
    args = parse_args(argv)
    results = run_bench(args)
    print('\n'.join(format_table(results)))
    if args.json:
        print(json.dumps(results, sort_keys=True))
    return results


if __name__ == '__main__':
    main()
