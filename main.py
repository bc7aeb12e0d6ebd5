"""FCN-8 road segmentation on a pretrained VGG16, in TensorFlow 1.x graph style: the classic exercise's main.py.

    python main.py [train] [flags]   train on KITTI Road (or CamVid, Cityscapes), write the run's model and overlays
    python main.py demo [flags]      the same, offline: generated roads (or --data-dir CamVid), a small random VGG
    python main.py finish RUN        export, test and overlay a run from its best checkpoint, without training
    python main.py evaluate|infer    measures of a trained model; overlays of new images and videos
    python main.py export --model RUN --onnx F.onnx   the run's model as ONNX, checked against TensorFlow
    python main.py bench [flags]     speed benchmark

The classic functions, where they live (roadseg/ holds the rest; see DEVELOPERS.md for the layout):
    load_vgg, layers, optimize   roadseg/model.py            the encoder, the FCN-8 decoder, the loss and Adam
    train_nn                     roadseg/training/loop.py    the training loop
    run                          below                       the command line (roadseg/cli.py)
"""
import sys

from roadseg import cli, process

__all__ = ['load_vgg', 'layers', 'optimize', 'train_nn', 'run', 'tf']

if __name__ == '__main__':  # before TensorFlow loads: its first log lines come at import, and it reads the switches
    process.show_everything() if process.verbose_requested(sys.argv) else process.filter_native_stderr()
    process.use_onednn_kernels()

try:
    from roadseg.model import layers, load_vgg, optimize  # noqa: E402
    from roadseg.process import graph_mode_tf  # noqa: E402
    from roadseg.training.loop import train_nn  # noqa: E402
    tf = graph_mode_tf()  # the classic tests' tf_module
except ImportError as missing:  # without a working TensorFlow, infer with an .onnx model still runs
    if missing.name != 'tensorflow' and 'tensorflow' not in str(missing).lower():
        raise


def run(argv=None):
    """The command line (flags: python main.py --help). Called by other code (the tests), it changes nothing in the
    process beyond its job; as the program, it may set the process up for TensorFlow."""
    cli.run(argv, own_process=__name__ == '__main__' and argv is None)


if __name__ == '__main__':
    run()
