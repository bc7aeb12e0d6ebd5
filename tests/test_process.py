"""The program as a process: what a normal run prints, the device line, XLA, malloc tuning, kernel caching."""
import json
import os
import re
import subprocess
import sys

import pytest

import main
from roadseg import cli, errors, process
from roadseg.data import datasets
from roadseg.process import graph_mode_tf
from tests.helpers import child_environment, main_py, project_importable, run_main

tf = graph_mode_tf()

TENSORFLOW_LINE = re.compile(r'^[IWEF]\d{4} |All log messages before absl|cuda drivers|cuInit', re.MULTILINE)


def test_a_normal_run_prints_only_the_projects_lines_and_verbose_shows_tensorflows(small_dataset, small_trained_run,
                                                                                   quick_train_args, new_folder):
    scene = datasets.kitti_test_images(small_dataset)[0]
    finished = main_py(['infer', '--model', small_trained_run, scene, '--out', new_folder('quiet-out')])
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert not TENSORFLOW_LINE.search(finished.stderr + finished.stdout), finished.stderr[-3000:]
    assert 'infer: 1 of 1 images written' in finished.stdout
    verbose = main_py(quick_train_args(new_folder('verbose-runs'), 1, '--xla', '--verbose'))
    assert verbose.returncode == 0, verbose.stderr[-3000:]
    assert TENSORFLOW_LINE.search(verbose.stderr), 'TensorFlow\'s own lines with --verbose'
    assert 'device: ' in verbose.stdout and 'train: done' in verbose.stdout
    if 'no GPU' in verbose.stdout:  # main.py turns TensorFlow's oneDNN kernels on, whatever the x86 CPU
        assert "training on the CPU with oneDNN's kernels" in verbose.stdout, verbose.stdout
    # --xla reaches the training step: TensorFlow logs its first XLA compilation (seen with --verbose only).
    assert 'Compiled cluster using XLA' in verbose.stderr


def test_the_noise_filter_drops_tensorflows_startup_lines_and_keeps_real_errors():
    lines = [b'I0000 00:00:1795752752.294139    2383 port.cc:153] oneDNN custom operations are on.',
             b'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR',
             b'E0000 00:00:1795752755.414847    2383 cuda_platform.cc:52] failed call to cuInit: INTERNAL',
             b'To enable the following instructions: AVX2 AVX512F, in other operations, rebuild TensorFlow']
    kept = [b'E0000 00:00:1795752755.414847    2383 op_kernel.cc:1] Not found: model.ckpt',
            b'F0000 00:00:1795752755.414847    2383 check.cc:1] Check failed', b'Traceback (most recent call last):']
    assert all(process.NOISE.match(line) for line in lines)
    assert not any(process.NOISE.match(line) for line in kept)
    assert process.verbose_requested(['main.py', 'infer', '--verbose'])
    assert not process.verbose_requested(['main.py', 'infer'])


def test_the_device_line_names_the_cpu_when_there_is_no_gpu():
    line = process.describe_device(tf)
    gpus = tf.config.list_physical_devices('GPU') if hasattr(tf, 'config') else []
    if gpus:
        pytest.skip('this machine has a GPU: the no-GPU line cannot be checked')
    assert line.startswith('device: no GPU') and 'slow' in line and tf.__version__ in line
    assert process.cpu_kernels() in line


def test_onednn_kernels_are_turned_on_unless_the_environment_turned_them_off(monkeypatch):
    monkeypatch.delenv(process.ONEDNN_SWITCH, raising=False)
    process.use_onednn_kernels()
    assert os.environ[process.ONEDNN_SWITCH] == '1'
    monkeypatch.setenv(process.ONEDNN_SWITCH, '0')
    process.use_onednn_kernels()
    assert os.environ[process.ONEDNN_SWITCH] == '0'


def test_the_session_takes_gpu_memory_as_it_needs_it():
    from roadseg.training import fit
    assert fit.session_config().gpu_options.allow_growth


MALLOC_PHASES_SCRIPT = """
import ctypes, ctypes.util, json, sys
import numpy as np
from roadseg import process
from roadseg.training import loop
from roadseg.process import graph_mode_tf

tf = graph_mode_tf()

libc = ctypes.CDLL(ctypes.util.find_library('c'))
class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ('arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks',
                                                     'fsmblks', 'uordblks', 'fordblks', 'keepcost')]
libc.mallinfo2.restype = Mallinfo2

def big_block_is_mmapped():
    before = libc.mallinfo2().hblks
    block = np.ones(16 * 2 ** 20)  # 128 MB, far above glibc's mmap threshold
    return libc.mallinfo2().hblks > before

tuned = process.tune_malloc()
mmapped_before = big_block_is_mmapped()
x = tf.Variable(3.0)
loss = tf.square(x)
train_op = tf.train.GradientDescentOptimizer(0.1).minimize(loss)
image, label, keep_prob, learning_rate = (tf.placeholder(tf.float32) for _ in range(4))
with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    loop.train_nn(sess, 1, 1, lambda batch_size: iter([([0.0], [0.0])]), train_op, loss, image, label,
                      keep_prob, learning_rate)
print(json.dumps([tuned, mmapped_before, big_block_is_mmapped()]))
"""


def test_malloc_tuning_keeps_big_blocks_in_the_heap_after_the_first_training_step():
    # The script imports roadseg: the child finds the project through PYTHONPATH.
    finished = subprocess.run([sys.executable, '-c', MALLOC_PHASES_SCRIPT], capture_output=True, text=True,
                              timeout=120, env=project_importable(child_environment()))
    assert finished.returncode == 0, finished.stderr[-2000:]
    tuned, mmapped_before, mmapped_after = json.loads(finished.stdout.strip().splitlines()[-1])
    if not tuned:
        pytest.skip('not glibc: tune_malloc does nothing here')
    # Phase 1 leaves big blocks to mmap (TensorFlow's pools grow there); train_nn's first step ends that.
    assert mmapped_before and not mmapped_after


def test_training_refuses_a_process_that_assumes_frozen_weights(monkeypatch, tmp_path):
    with monkeypatch.context() as patched:
        patched.setenv(process.FROZEN_WEIGHTS_SWITCH, '1')
        with pytest.raises(errors.ProcessSettingError) as caught:
            main.train_nn(None, 1, 1, None, None, None, None, None, None, None)
    assert process.FROZEN_WEIGHTS_SWITCH in str(caught.value) and 'Unset it' in str(caught.value), str(caught.value)
    # As a program: main.py stops before writing anything, with the reason. The child gets this folder.
    data_dir = str(tmp_path)
    finished = main_py(['demo', '--data-dir', data_dir, '--runs-dir', os.path.join(data_dir, 'runs')],
                       env=child_environment(**{process.FROZEN_WEIGHTS_SWITCH: 'true'}))
    assert finished.returncode != 0 and process.FROZEN_WEIGHTS_SWITCH in finished.stderr, \
        finished.stderr[-2000:]
    assert 'Traceback' not in finished.stderr
    assert os.listdir(data_dir) == [], os.listdir(data_dir)


def test_bad_flags_end_in_one_line():
    for argv, expected in ((['train', '--image-shape', '100', '576'], 'multiples of 8'),
                           (['demo', '--keep-prob', '0'], '--keep-prob'),
                           (['demo', '--learning-rate', 'inf'], '--learning-rate must be a finite number'),
                           (['demo', '--learning-rate', 'nan'], '--learning-rate must be a finite number'),
                           (['demo', '--skip-scales', 'nan', '1'], '--skip-scales must be finite'),
                           (['demo', '--epochs', '0'], '--epochs must be >= 1'),
                           (['demo', '--batch-size', '0'], '--batch-size must be >= 1'),
                           (['train', '--val-fraction', '1'], '--val-fraction must be in [0, 1)')):
        _, message = run_main(argv)
        assert isinstance(message, str) and expected in message and '\n' not in message, (argv, message)
    args = cli.parse_args(['--epochs', '3'])
    assert args.command == 'train' and args.epochs == 3 and args.image_shape == (160, 576)
    assert cli.parse_args([]).command == 'train'


def test_an_interrupt_outside_training_does_not_advise_a_resume():
    for command in ('infer', 'export', 'evaluate', 'finish'):
        line = cli.one_line(KeyboardInterrupt(), command)
        assert 'interrupted' in line and '--resume' not in line, (command, line)
    assert '--resume' in cli.one_line(KeyboardInterrupt(), 'train')
