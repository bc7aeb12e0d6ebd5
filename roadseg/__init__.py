"""FCN-8 road segmentation on VGG16 in TensorFlow 1.x graph style: everything behind main.py and helper.py.

Layers, each importing only from those below it (DEVELOPERS.md has a line per module):
    cli, commands/    the command line and one module per command
    training/         train_nn, a run's epochs, schedules, the run folder
    evaluation/       the KITTI devkit measures, scoring a model on labelled images
    serving/          the exported model, running any model over files and videos, ONNX
    model, vgg_builder    FCN-8 under the paper's names; the VGG16 SavedModel it loads
    data/             layouts, splits, labels, images, batches, generated roads, downloads
    config, errors, atomic, process    constants and recipes; user errors; the one writer; the process set-up
"""
