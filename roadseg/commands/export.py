"""python main.py export --model RUN --onnx model.onnx: the run's model as ONNX, kept only if onnxruntime matches
TensorFlow on it (serving/onnx_export.py converts and compares)."""
import os

import onnxruntime
import tf2onnx

from roadseg import atomic
from roadseg.errors import ModelError, OutputError
from roadseg.process import graph_mode_tf
from roadseg.serving import inference
from roadseg.serving.onnx_export import (MAX_DIFFERENCE, TIE_MARGIN, check_against_tensorflow, check_batches,
                                         check_images, convert_apart, refusal, run_of, serving_signature)

tf = graph_mode_tf()


def export(args):
    """python main.py export: convert, check against TensorFlow, then keep the ONNX file (atomically) or refuse."""
    target = args.onnx
    if os.path.exists(target) and not args.overwrite:
        raise OutputError('%s already exists; pass --overwrite to replace it, or choose another --onnx path' % target)
    export_dir = inference.resolve_export_dir(args.model)
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    with atomic.staged_path(target) as temporary:
        messages = convert_apart(export_dir, temporary, args.opset)
        print('export: converted %s with tf2onnx %s, opset %d' % (export_dir, tf2onnx.__version__, args.opset))
        exported = inference.ExportedModel(export_dir)
        try:
            pictures, described = check_images(run_of(args.model, export_dir))
            largest, pixels, flipped, decisive = check_against_tensorflow(
                temporary, exported, serving_signature(export_dir),
                check_batches(pictures, exported.info.image_shape), messages)
        finally:
            exported.close()
        print('export: onnxruntime %s against TensorFlow %s on %d %s, each at its own size and all at the '
              "network's %dx%d: largest difference %.2g (limit %g), masks agree on %d of %d pixels%s"
              % (onnxruntime.__version__, tf.__version__, len(pictures), described, exported.info.image_shape[1],
                 exported.info.image_shape[0], largest, MAX_DIFFERENCE, pixels - flipped, pixels,
                 _ties_note(flipped - decisive)))
        reason = refusal(largest, decisive, messages)
        if reason:
            raise ModelError(reason)
    print('export: wrote %s (%.1f MB)' % (target, os.path.getsize(target) / 1e6))


def _ties_note(tied_flips):
    if not tied_flips:
        return ''
    return ('; %d of those that differ are ties (TensorFlow within %g of the decision there), which float '
            'rounding decides' % (tied_flips, TIE_MARGIN))
