"""Setting up the process for TensorFlow: its start-up noise, graph mode, malloc, oneDNN, the device, XLA.

TensorFlow's runtime writes "I0000 ... oneDNN custom operations", "Could not find cuda drivers" and
"E0000 ... failed call to cuInit" straight to file descriptor 2 before absl logging starts, where
TF_CPP_MIN_LOG_LEVEL no longer reaches: filter_native_stderr() puts a filter on descriptor 2 before
TensorFlow loads (--verbose or FCN8_VERBOSE=1 shows everything). Every module that builds graphs takes
`tf = process.graph_mode_tf()`: tensorflow.compat.v1 with eager execution off, whoever imports first.
The speed settings (malloc, oneDNN's kernels and their caching) are explained in docs/design.md.
"""
import atexit
import ctypes
import ctypes.util
import functools
import os
import re
import signal
import subprocess
import sys
import threading

from roadseg.errors import ProcessSettingError

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

VERBOSE_VARIABLE = 'FCN8_VERBOSE'

# C++ log lines of severity I or W ("I0000 00:00:1795752752.294139    2383 port.cc:153] ..."), absl's banner,
# the second line of the CPU feature notice, and the errors that only say there is no GPU.
NOISE = re.compile(rb'^(?:[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\]'
                   rb'|WARNING: All log messages before absl::InitializeLog\(\)'
                   rb'|To enable the following instructions:'
                   rb'|E\d{4} .*(?:cuInit|cuda_diagnostics|Unable to register cu(?:DNN|FFT|BLAS)))')


def verbose_requested(argv):
    return '--verbose' in argv or os.environ.get(VERBOSE_VARIABLE, '').strip() not in ('', '0')


def show_everything():
    """--verbose: TensorFlow's C++ log at its own default level (graph_mode_tf lowers it to errors otherwise)."""
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '0')


def filter_native_stderr():
    """Route descriptor 2 through a thread that drops TensorFlow's start-up noise; the rest goes on unchanged."""
    terminal = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    sys.stderr = open(terminal, 'w', buffering=1, errors='backslashreplace', closefd=False)
    forwarder = threading.Thread(target=_forward, args=(read_end, terminal), daemon=True)
    forwarder.start()

    def drain():
        """At exit, close the filter's input and let it pass on what is left."""
        os.dup2(terminal, 2)
        forwarder.join(timeout=2)

    atexit.register(drain)


def _forward(read_end, terminal):
    pending = b''
    while True:
        chunk = os.read(read_end, 1 << 16)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b'\n')
        kept = b''.join(line + b'\n' for line in lines if not NOISE.match(line))
        if kept:
            os.write(terminal, kept)
    if pending and not NOISE.match(pending):
        os.write(terminal, pending)


# --------------------------------------------------------------------------- signals

# What a scheduler, `timeout` or a closed terminal sends to end a program, besides Ctrl-C's SIGINT.
TERMINATION_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def interrupt_on_termination():
    """End on SIGTERM and SIGHUP as on Ctrl-C: a KeyboardInterrupt in the main thread, so that every write in
    progress removes its temporary file and the run says where it stands."""
    for number in TERMINATION_SIGNALS:
        signal.signal(number, signal.default_int_handler)


def ignore_further_interrupts():
    """While the program says why it stopped: another Ctrl-C, SIGTERM or SIGHUP must not cut that line short."""
    for number in (signal.SIGINT,) + TERMINATION_SIGNALS:
        signal.signal(number, signal.SIG_IGN)


# --------------------------------------------------------------------------- TensorFlow in graph mode

@functools.lru_cache(maxsize=None)
def graph_mode_tf():
    """`tensorflow.compat.v1` with eager execution off and its Python log at errors (--verbose: its default)."""
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    import tensorflow.compat.v1 as tf
    tf.disable_eager_execution()
    tf.get_logger().setLevel('ERROR')
    return tf


def run_module_apart(module, *args, **kwargs):
    """`python -m <module> args` in a child process that finds this package (subprocess.run's kwargs)."""
    env = dict(kwargs.pop('env', None) or os.environ)
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [PROJECT_ROOT, env.get('PYTHONPATH')]))
    return subprocess.run([sys.executable, '-m', module] + [str(arg) for arg in args], env=env, **kwargs)


# --------------------------------------------------------------------------- speed settings

FROZEN_WEIGHTS_SWITCH = 'TF_ONEDNN_ASSUME_FROZEN_WEIGHTS'
ONEDNN_SWITCH = 'TF_ENABLE_ONEDNN_OPTS'

# The glibc handle once tune_malloc applied (settle_malloc's cue), and whether settle_malloc has run.
_MALLOC_TUNING = {'libc': None, 'settled': False}


def _glibc():
    """glibc as a ctypes library, or None (musl, other platforms)."""
    libc_name = ctypes.util.find_library('c')
    if not libc_name or 'musl' in libc_name:
        return None
    libc = ctypes.CDLL(libc_name)
    return libc if hasattr(libc, 'mallopt') else None


def tune_malloc():
    """Phase 1, before the first Session: one malloc arena, so that once settled every thread's big blocks
    come from one heap. oneDNN converts every big kernel in a fresh posix_memalign buffer at every step;
    glibc would mmap and unmap them, faulting their pages in again each time. Returns whether it applied."""
    libc = _glibc()
    m_arena_max = -8
    if libc and libc.mallopt(m_arena_max, 1) == 1:
        _MALLOC_TUNING['libc'] = libc
    return _MALLOC_TUNING['libc'] is not None


def settle_malloc():
    """Phase 2, after the first training step: no more mmap, no trimming. Waiting until TensorFlow's own
    pools have grown (with mmap, outside the heap) keeps the heap from fragmenting."""
    libc = _MALLOC_TUNING['libc']
    if libc is None or _MALLOC_TUNING['settled']:
        return
    m_trim_threshold, m_mmap_max = -1, -4
    libc.mallopt(m_mmap_max, 0)
    libc.mallopt(m_trim_threshold, 2 ** 31 - 1)
    _MALLOC_TUNING['settled'] = True


def use_onednn_kernels():
    """TensorFlow's oneDNN kernels on every x86 CPU: TensorFlow 2.21 turns them on by itself only where the CPU has
    AVX-512's neural-network instructions, yet on an AVX2 CPU they train twice as fast as its Eigen kernels
    (docs/performance.md). Before TensorFlow loads; TF_ENABLE_ONEDNN_OPTS=0 in the environment keeps them off."""
    os.environ.setdefault(ONEDNN_SWITCH, '1')


def cache_kernel_layouts():
    """Let oneDNN convert each kernel to its layout once and keep it, in a process that only runs models.

    TensorFlow reads the switch once per process, and a process that trains must never have it (its
    forward pass would keep using the first weights). Call it before the first Session runs.
    """
    os.environ[FROZEN_WEIGHTS_SWITCH] = '1'


def check_weights_not_frozen():
    """Refuse to train in a process where oneDNN assumes the weights never change (see cache_kernel_layouts)."""
    if os.environ.get(FROZEN_WEIGHTS_SWITCH, '').strip().lower() in ('1', 'true'):
        raise ProcessSettingError('%s=%s is set: oneDNN would keep using the first weights and training would '
                                  'silently go wrong. Unset it (it is only for processes that run a trained model)'
                                  % (FROZEN_WEIGHTS_SWITCH, os.environ[FROZEN_WEIGHTS_SWITCH]))


def describe_device(tf):
    """One line naming what will train: the GPU(s) and their memory, or that there is none."""
    gpus = [device for device in _local_devices(tf) if device.device_type == 'GPU']
    if not gpus:
        return ('device: no GPU, training on the CPU with %s: this will be slow (docs/performance.md, "On a GPU"); '
                'TensorFlow %s' % (cpu_kernels(), tf.__version__))
    return 'device: %s; TensorFlow %s' % ('; '.join('%s (%.1f GB)' % (_gpu_name(gpu), gpu.memory_limit / 2 ** 30)
                                                    for gpu in gpus), tf.__version__)


def cpu_kernels():
    """Which kernels TensorFlow's CPU convolutions run: oneDNN's, or Eigen's (see use_onednn_kernels)."""
    from tensorflow.python.util import _pywrap_util_port
    if _pywrap_util_port.IsMklEnabled():
        return "oneDNN's kernels"
    return "Eigen's kernels (%s=1 before TensorFlow loads would use oneDNN's)" % ONEDNN_SWITCH


def _local_devices(tf):
    from tensorflow.python.client import device_lib
    return device_lib.list_local_devices(tf.ConfigProto(gpu_options=tf.GPUOptions(allow_growth=True)))


def _gpu_name(device):
    for part in device.physical_device_desc.split(', '):
        if part.startswith('name: '):
            return part[len('name: '):]
    return device.name


XLA_CPU_FLAG = '--tf_xla_cpu_global_jit'


def let_xla_cluster_on_cpu():
    """XLA's auto-clustering leaves the CPU out unless TF_XLA_FLAGS says otherwise: --xla means the CPU too.

    TensorFlow reads the variable when it first compiles, so this works after import, before the first step.
    """
    flags = os.environ.get('TF_XLA_FLAGS', '')
    if XLA_CPU_FLAG not in flags.split():
        os.environ['TF_XLA_FLAGS'] = (flags + ' ' + XLA_CPU_FLAG).strip()
