"""The classic exercise's helper functions, kept under their names and signatures.

Each is a thin door into the package module that does the work: roadseg/data/downloads.py, roadseg/data/batches.py,
roadseg/serving/inference.py and roadseg/serving/files.py.
"""
import glob
import os
import time

from roadseg.data import batches, datasets, downloads, images
from roadseg.errors import DatasetError
from roadseg.serving import files, inference

maybe_download_pretrained_vgg = downloads.maybe_download_pretrained_vgg


def gen_batch_function(data_folder, image_shape, pairs=None, seed=0, first_epoch=0,
                       label_to_onehot=datasets.kitti_label_to_onehot, augment=False):
    """`get_batches_fn(batch_size)` over a KITTI Road training folder (or the given (image, label) `pairs`).

    Every image is decoded and resized once, up front; each call then yields shuffled (images uint8
    [B,H,W,3], labels bool [B,H,W,classes]) batches from memory, prepared ahead by a pool of threads started once.
    """
    pairs = datasets.kitti_road_pairs(data_folder) if pairs is None else list(pairs)
    return batches.TrainingBatches(pairs, image_shape, seed, first_epoch, label_to_onehot, augment)


def gen_test_output(sess, logits, keep_prob, image_pl, data_folder, image_shape, batch_size=8):
    """Yield (file name, overlay at the image's original resolution) for `data_folder/image_2/*.png`."""
    paths = sorted(glob.glob(os.path.join(data_folder, 'image_2', '*.png')))
    if not paths:
        raise DatasetError('no test images (*.png) in %s' % os.path.join(data_folder, 'image_2'))
    predict = inference.SessionPredictor(sess, logits, keep_prob, image_pl, image_shape)
    for path, image, probabilities in files.predictions(predict, paths, batch_size):
        yield os.path.basename(path), images.road_overlay(image, probabilities[..., predict.road_class])


def save_inference_samples(runs_dir, data_dir, sess, image_shape, logits, keep_prob, input_image):
    """Write overlays of every KITTI test image to runs_dir/<timestamp>/; returns the folder."""
    paths = datasets.kitti_test_images(os.path.join(data_dir, 'data_road'))
    if not paths:
        raise DatasetError('no test images (*.png) in %s' % os.path.join(data_dir, 'data_road', 'testing', 'image_2'))
    output_dir = os.path.join(runs_dir, str(time.time()))
    os.makedirs(output_dir)
    predict = inference.SessionPredictor(sess, logits, keep_prob, input_image, image_shape)
    plan = {path: [os.path.join(output_dir, os.path.basename(path))] for path in paths}
    print('Saved %d test overlays to %s' % (files.write_image_predictions(predict, plan), output_dir))
    return output_dir
