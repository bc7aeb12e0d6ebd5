"""Downloads over HTTP, unpacked atomically: the classic vgg.zip, Keras' VGG16 weights file, KITTI Road.

No TensorFlow here: building a SavedModel from Keras' weights is vgg_builder's.
"""
import hashlib
import os
import urllib.error
import urllib.request
import zipfile

from tqdm import tqdm

from roadseg import atomic
from roadseg.data import datasets
from roadseg.errors import DatasetError, DownloadError

VGG_URL = 'https://s3-us-west-1.amazonaws.com/udacity-selfdrivingcar/vgg.zip'
VGG_FILES = ('saved_model.pb', 'variables/variables.index', 'variables/variables.data-00000-of-00001')
# Keras' own mirror of the ImageNet VGG16 weights (with the top), and its checksum.
KERAS_VGG16_URL = ('https://storage.googleapis.com/tensorflow/keras-applications/vgg16/'
                   'vgg16_weights_tf_dim_ordering_tf_kernels.h5')
# Checksums of the files whose content is known, verified after download.
KNOWN_MD5 = {KERAS_VGG16_URL: '64373286793e3c8b2b4e3219cbf3544b'}


def download_file(url, destination, description=None):
    """Download `url` to `destination` with a progress bar, atomically; a known file whose md5 differs is refused."""
    os.makedirs(os.path.dirname(os.path.abspath(destination)), exist_ok=True)
    try:
        with atomic.writing(destination) as out, urllib.request.urlopen(url, timeout=60) as response:
            checksum = hashlib.md5()
            total = int(response.headers.get('Content-Length') or 0) or None
            with tqdm(total=total, unit='B', unit_scale=True, desc=description or os.path.basename(url)) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b''):
                    out.write(chunk)
                    checksum.update(chunk)
                    bar.update(len(chunk))
            expected = KNOWN_MD5.get(url)
            if expected and checksum.hexdigest() != expected:
                raise DownloadError('%s arrived corrupt (md5 %s, expected %s); try again'
                                    % (url, checksum.hexdigest(), expected))
    except (urllib.error.URLError, OSError) as error:
        reason = error if isinstance(error, urllib.error.HTTPError) else getattr(error, 'reason', error)
        raise DownloadError('could not download %s: %s' % (url, reason)) from error
    return destination


def download_and_unpack(url, data_dir, expected_folder, description=None):
    """Download a zip archive and unpack it so that `data_dir/expected_folder` appears, complete or not at all."""
    with atomic.scratch_folder(data_dir) as staging:
        archive = download_file(url, os.path.join(staging, 'archive.zip'), description)
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(staging)
        except zipfile.BadZipFile as error:
            raise DownloadError('%s is not a valid zip archive (%s)' % (url, error)) from error
        unpacked = os.path.join(staging, expected_folder)
        if not os.path.isdir(unpacked):
            raise DownloadError('the archive from %s has no folder %r' % (url, expected_folder))
        target = os.path.join(data_dir, expected_folder)
        os.rename(unpacked, target)
        return target


def vgg_is_complete(vgg_path):
    return all(os.path.isfile(os.path.join(vgg_path, name)) for name in VGG_FILES)


def maybe_download_pretrained_vgg(data_dir, url=VGG_URL):
    """Download and extract the pretrained VGG16 SavedModel to `data_dir/vgg` if it is absent."""
    vgg_path = os.path.join(data_dir, 'vgg')
    if vgg_is_complete(vgg_path):
        return vgg_path
    if os.path.exists(vgg_path):
        raise DatasetError('%s exists but is incomplete (needs %s); delete it and run again to download a fresh copy'
                           % (vgg_path, ', '.join(VGG_FILES)))
    try:
        return download_and_unpack(url, data_dir, 'vgg', 'vgg.zip')
    except DownloadError as error:
        raise DownloadError('%s\nGet the pretrained VGG16 by hand: download %s on a connected machine and unzip it '
                            'into %s so that %s exists.'
                            % (error, url, data_dir, os.path.join(vgg_path, 'saved_model.pb'))) from error


def keras_weights_path(url=KERAS_VGG16_URL):
    """Where Keras caches downloaded weights ($KERAS_HOME/models, default ~/.keras/models)."""
    keras_home = os.environ.get('KERAS_HOME', os.path.join(os.path.expanduser('~'), '.keras'))
    return os.path.join(keras_home, 'models', os.path.basename(url))


def maybe_download_kitti(data_dir, url=None):
    """Return `data_dir/data_road`, downloading it from `url` (the link KITTI mails) if absent."""
    data_road = os.path.join(data_dir, 'data_road')
    if os.path.isdir(os.path.join(data_road, 'training', 'image_2')):
        return data_road
    if url is None:
        raise DatasetError(datasets.kitti_instructions(data_dir))
    try:
        return download_and_unpack(url, data_dir, 'data_road', datasets.KITTI_ARCHIVE)
    except DownloadError as error:
        raise DownloadError('%s\n%s' % (error, datasets.kitti_instructions(data_dir))) from error
