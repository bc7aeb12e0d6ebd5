"""The errors a user can act on. main.py turns each into one line that says what is wrong and what to do."""
import errno
import os



class UserError(RuntimeError):
    """Bad input, a missing file or a setting that cannot work; the message says what to do."""


class DatasetError(UserError):
    """The dataset on disk is missing, incomplete or unreadable."""


class DownloadError(UserError):
    """A file could not be downloaded; the message says how to get it by hand."""


class VGGModelError(UserError):
    """The VGG SavedModel is missing, damaged, or lacks the tag or tensors FCN-8 needs."""


class ModelError(UserError):
    """A trained model (a run folder, an export or an ONNX file) is missing or is not one of ours."""


class RunFolderError(UserError):
    """A run folder is missing, incomplete, damaged or busy."""


class OutputError(UserError):
    """An output would replace a file the user did not ask to replace, or cannot be written."""


class ProcessSettingError(UserError):
    """The process is set up in a way that would make training wrong."""


class TrainingDiverged(UserError):
    """The loss or the weights stopped being usable; the run's best checkpoint is still there."""


class Interrupted(UserError):
    """Ctrl-C during training; the message says where the run stands and how to continue."""


class OutOfMemory(UserError):
    """Training ran out of (GPU) memory; the message names what to lower or switch on."""


def disk_trouble(error):
    """An OSError met while writing, as an OutputError that says what to do; None for other errors."""
    where = error.filename or 'a file'
    if error.errno == errno.ENOSPC:
        return OutputError('the disk is full (writing %s). Free some space: nothing written so far is damaged, and '
                           'a training run continues with python main.py train --resume RUN_DIR' % where)
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError('cannot write %s (%s); choose a writable folder (--runs-dir, --out)'
                           % (where, os.strerror(error.errno)))
    return None
