"""Keep TensorFlow's C++ start-up lines off a normal run's terminal; --verbose or FCN8_VERBOSE=1 shows them.

TensorFlow's runtime writes "I0000 ... oneDNN custom operations", "Could not find cuda drivers" and
"E0000 ... failed call to cuInit" straight to file descriptor 2 before absl logging starts, where
TF_CPP_MIN_LOG_LEVEL no longer reaches. So the program's descriptor 2 goes through a filter that drops
those lines and passes everything else (real errors included) on; Python's own sys.stderr (messages,
tracebacks, progress bars) writes to the terminal directly.
"""
import atexit
import os
import re
import sys
import threading

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
    """--verbose: TensorFlow's C++ log at its own default level (tfv1 lowers it to errors otherwise)."""
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
