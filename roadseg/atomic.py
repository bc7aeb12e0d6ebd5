"""The one way this project writes what a user keeps: under a temporary name beside the target, then a rename.

A kill, a Ctrl-C or a full disk at any moment leaves either the old file or folder or the new one, never a
half-written one. Temporary names start with STAGING_PREFIX, so leftovers of a killed write can be found.
"""
import contextlib
import errno
import os
import shutil
import tempfile
import time

import imageio.v3 as iio

from roadseg.errors import OutputError

STAGING_PREFIX = '.staging-'


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def staged_path(path):
    """Yield a temporary path beside `path` (same extension) for writers that take a file name, such as
    ffmpeg; it is synced and renamed to `path` when the block ends without an error, else removed."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=STAGING_PREFIX, suffix=os.path.splitext(path)[1], dir=directory)
    os.close(fd)
    os.chmod(temporary, 0o666 & ~_umask())  # mkstemp's 0600 would hide a user's files from their group
    try:
        yield temporary
        with open(temporary, 'rb') as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


@contextlib.contextmanager
def writing(path, mode='wb'):
    """Open a temporary file beside `path`; renamed to `path` when the block ends without an error."""
    with staged_path(path) as temporary, open(temporary, mode) as f:
        yield f


def write_file(path, data):
    """Write bytes or text to `path`."""
    with writing(path) as f:
        f.write(data.encode() if isinstance(data, str) else data)


def write_image(path, image):
    """Encode `image` in the format its extension names (png, jpg) and write it."""
    write_file(path, iio.imwrite('<bytes>', image, extension=os.path.splitext(path)[1] or '.png'))


@contextlib.contextmanager
def folder(target, replace=False):
    """Yield a temporary folder beside `target`; it becomes `target` when the block ends without an error.

    An existing `target` is refused unless `replace`; then it is swapped out only once the new one is
    complete (a kill between the two renames leaves the old one as `.retired-<name>`, see retired_path).
    """
    parent = os.path.dirname(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    if os.path.exists(target) and not replace:
        raise FileExistsError('%s already exists' % target)
    staging = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=parent)
    os.chmod(staging, 0o777 & ~_umask())
    retired = retired_path(target)
    try:
        yield staging
        shutil.rmtree(retired, ignore_errors=True)
        if os.path.exists(target):
            os.rename(target, retired)
        os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(retired, ignore_errors=True)


@contextlib.contextmanager
def scratch_folder(parent):
    """A temporary folder inside `parent` (same file system, so what is built there can be renamed out of it),
    removed when the block ends."""
    os.makedirs(parent, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=parent)
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def retired_path(target):
    """Where folder() parks the previous `target` between its two renames."""
    return os.path.join(os.path.dirname(os.path.abspath(target)), '.retired-' + os.path.basename(target))


def remove_leftovers(parent):
    """Remove the temporary files and folders that writes cut short left in `parent`.

    Only for a process that owns `parent` (e.g. holds its run's lock): a live write's staging looks the same.
    """
    if not os.path.isdir(parent):
        return
    for entry in os.listdir(parent):
        if entry.startswith(STAGING_PREFIX):
            path = os.path.join(parent, entry)
            shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)


def why_unwritable(folder):
    """Why a folder that os.access finds unwritable is so, as os.strerror says it: a read-only file system, or
    permissions."""
    read_only = os.statvfs(folder).f_flag & os.ST_RDONLY
    return os.strerror(errno.EROFS if read_only else errno.EACCES)


def new_timestamped_folder(parent):
    """Create and return parent/<date_time> (with a -N suffix if taken): a run never reuses another's folder."""
    try:
        os.makedirs(parent, exist_ok=True)
        stamp = time.strftime('%Y-%m-%d_%H-%M-%S')
        for suffix in [''] + ['-%d' % i for i in range(1, 1000)]:
            path = os.path.join(parent, stamp + suffix)
            try:
                os.makedirs(path)
                return path
            except FileExistsError:
                continue
    except OSError as error:
        raise OutputError('cannot create a folder in %s (%s); choose a writable one' % (parent, error.strerror)) \
            from error
    raise OutputError('could not create a new folder in %s' % parent)
