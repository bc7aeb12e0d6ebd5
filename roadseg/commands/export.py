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


def check_target(target, overwrite):
    """Refuse, before the conversion, an --onnx path that cannot become the file: a folder, under a file, a name
    too long, an unwritable folder, or an existing file without --overwrite."""
    if os.path.isdir(target):
        raise OutputError('--onnx %s is a folder; give the file to write, e.g. %s' % (target, os.path.join(
            target, 'model.onnx')))
    parent = os.path.dirname(os.path.abspath(target))
    existing = parent
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise OutputError('--onnx %s cannot be written: %s is a file, not a folder; choose another --onnx path'
                          % (target, existing))
    name_max = os.pathconf(existing, 'PC_NAME_MAX')
    if len(os.fsencode(os.path.basename(target))) > name_max:
        raise OutputError('--onnx %s: the name is longer than the file system takes (%d bytes); choose a shorter '
                          'one' % (target[:60] + '...', name_max))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError('cannot write in %s (%s); choose a writable --onnx path'
                          % (existing, atomic.why_unwritable(existing)))
    if os.path.lexists(target) and not overwrite:
        raise OutputError('%s already exists; pass --overwrite to replace it, or choose another --onnx path' % target)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as error:
        raise OutputError('cannot create %s (%s); choose another --onnx path' % (parent, error.strerror)) from error


def check_model(path):
    """The export folder of --model (a run folder or its export/); ModelError in one line for anything else, an
    ONNX file included: export makes one from a TensorFlow model, it cannot start from one."""
    if os.path.isfile(path):
        what = 'an ONNX model' if path.lower().endswith('.onnx') else 'a file'
        raise ModelError('--model %s is %s: export converts a TensorFlow model to ONNX; pass the run folder made by '
                         'python main.py train (or its export/ folder)%s'
                         % (path, what, ', and use the .onnx file as it is with python main.py infer or evaluate'
                            if what == 'an ONNX model' else ''))
    export_dir = inference.resolve_export_dir(path)
    if not os.path.isfile(os.path.join(export_dir, 'saved_model.pb')):
        raise ModelError('no trained model at %s: pass a run folder made by python main.py train (it holds export/) '
                         'or its export/ folder' % path)
    return export_dir


def export(args):
    """python main.py export: convert, check against TensorFlow, then keep the ONNX file (atomically) or refuse."""
    target = args.onnx
    export_dir = check_model(args.model)
    check_target(target, args.overwrite)
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
