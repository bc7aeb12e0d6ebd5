"""Process-wide settings for speed and for the machine: glibc's malloc, oneDNN's kernel caching, the device.

See DEVELOPERS.md ("Things learned the hard way") for why each exists and README for what each is worth.
"""
import ctypes
import ctypes.util
import os

from errors import ProcessSettingError

FROZEN_WEIGHTS_SWITCH = 'TF_ONEDNN_ASSUME_FROZEN_WEIGHTS'

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
        return ('device: no GPU, training on the CPU: this will be slow (README, "On a GPU"); TensorFlow %s'
                % tf.__version__)
    return 'device: %s; TensorFlow %s' % ('; '.join('%s (%.1f GB)' % (_gpu_name(gpu), gpu.memory_limit / 2 ** 30)
                                                    for gpu in gpus), tf.__version__)


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
