"""python main.py export --model RUN --onnx model.onnx [--int8] | --tflite model.tflite: the run's model as ONNX,
kept only if onnxruntime matches TensorFlow on it (serving/onnx_export.py converts and compares); or as a faster
form (int8 ONNX, TFLite), kept only if its road MaxF and IoU stay within --max-change points of the float model's on
the run's labelled images (evaluation/form_check.py)."""
import os
import tempfile

import onnxruntime
import tf2onnx

from roadseg import atomic
from roadseg.commands.infer import expand_inputs
from roadseg.config import (CALIBRATION_IMAGES, DEFAULT_TFLITE_TYPE, DEPLOYED_MAX_CHANGE_POINTS, RUN_CONFIG_FILE,
                            RunConfig)
from roadseg.data import datasets
from roadseg.errors import DatasetError, ModelError, OutputError, UserError
from roadseg.evaluation import form_check
from roadseg.process import graph_mode_tf
from roadseg.serving import files, inference, quantize, tflite_export
from roadseg.serving.onnx_export import (MAX_DIFFERENCE, TIE_MARGIN, check_against_tensorflow, check_batches,
                                         check_images, convert_apart, refusal, run_of, serving_signature)

tf = graph_mode_tf()


def check_target(target, overwrite, flag='--onnx'):
    """Refuse, before the conversion, an --onnx (or --tflite: `flag`) path that cannot become the file: a
    folder, under a file, a name too long, an unwritable folder, or an existing file without --overwrite."""
    if os.path.isdir(target):
        raise OutputError('%s %s is a folder; give the file to write, e.g. %s' % (flag, target, os.path.join(
            target, 'model.' + flag.lstrip('-'))))
    parent = os.path.dirname(os.path.abspath(target))
    existing = parent
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise OutputError('%s %s cannot be written: %s is a file, not a folder; choose another %s path'
                          % (flag, target, existing, flag))
    name_max = os.pathconf(existing, 'PC_NAME_MAX')
    if len(os.fsencode(os.path.basename(target))) > name_max:
        raise OutputError('%s %s: the name is longer than the file system takes (%d bytes); choose a shorter '
                          'one' % (flag, target[:60] + '...', name_max))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError('cannot write in %s (%s); choose a writable %s path'
                          % (existing, atomic.why_unwritable(existing), flag))
    if os.path.lexists(target) and not overwrite:
        raise OutputError('%s already exists; pass --overwrite to replace it, or choose another %s path'
                          % (target, flag))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as error:
        raise OutputError('cannot create %s (%s); choose another %s path' % (parent, error.strerror, flag)) from error


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


def check_form_flags(args):
    """Refuse flags for another form than the one asked for, in one line; fill the defaults of the one asked."""
    misplaced = [(args.int8 and not args.onnx, '--int8 goes with --onnx FILE'),
                 (args.tflite_type and not args.tflite, '--tflite-type goes with --tflite FILE')]
    args.tflite_type = (args.tflite_type or DEFAULT_TFLITE_TYPE) if args.tflite else None
    checked = bool(args.int8 or args.tflite)
    misplaced += [(args.calibration_images and not calibrated(args),
                   '--calibration-images goes with --int8 or --tflite-type int8 (only int8 models are calibrated)'),
                  (args.max_change is not None and not checked,
                   '--max-change goes with --int8 or --tflite (a float32 ONNX model must match TensorFlow itself)'),
                  (args.max_change is not None and not args.max_change >= 0,
                   '--max-change must be a number of points >= 0')]
    for wrong, why in misplaced:
        if wrong:
            raise UserError(why)
    args.max_change = DEPLOYED_MAX_CHANGE_POINTS if args.max_change is None else args.max_change


def calibrated(args):
    """Whether the form asked for is int8, which is calibrated on images."""
    return bool(args.int8 or args.tflite_type == 'int8')


def export(args):
    """python main.py export: convert, check, then keep the file (atomically) or refuse."""
    check_form_flags(args)
    export_dir = check_model(args.model)
    target, flag = (args.tflite, '--tflite') if args.tflite else (args.onnx, '--onnx')
    check_target(target, args.overwrite, flag)
    if args.tflite or args.int8:
        export_checked_form(args, export_dir, target)
    else:
        export_float_onnx(args, export_dir, target)


def export_float_onnx(args, export_dir, target):
    """Convert to ONNX, check against TensorFlow, then keep the ONNX file or refuse."""
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


def run_config_of(args, export_dir):
    """The RunConfig of the run --model belongs to; ModelError if it is an export/ folder alone."""
    run_dir = run_of(args.model, export_dir)
    if run_dir is None:
        raise ModelError("export --int8 and --tflite check the new form against the float model on the run's "
                         'labelled images: pass a run folder (the one holding %s), not %s'
                         % (RUN_CONFIG_FILE, args.model))
    path = os.path.join(run_dir, RUN_CONFIG_FILE)
    with open(path) as f:
        return RunConfig.from_json(f.read(), path)


def check_pairs(run_config):
    """(labelled pairs, what they are) the form is checked on: the run's test images, else its validation
    images; DatasetError if none of them is still there."""
    for pairs, which in ((run_config.test, 'test'), (run_config.val, 'validation')):
        present = [pair for pair in pairs if all(os.path.isfile(path) for path in pair)]
        if present:
            return present, "the run's %d labelled %s images" % (len(present), which)
    raise DatasetError("none of the run's labelled test or validation images is where run.json says (under %s); "
                       'the check against the float model needs them: put the data back' % run_config.data_root)


def calibration_paths(args, run_config):
    """(up to CALIBRATION_IMAGES image paths, what they are) for an int8 form: --calibration-images, or the
    run's validation and test images."""
    if args.calibration_images:
        paths = expand_inputs([args.calibration_images], files.IMAGE_EXTENSIONS)
        which = '--calibration-images %s' % args.calibration_images
    else:
        paths = [image for image, _ in run_config.val + run_config.test] + run_config.test_images
        paths = [path for path in paths if os.path.isfile(path)]
        which = "the run's validation and test images"
    if not paths:
        raise DatasetError('no images to calibrate the int8 model on in %s; pass --calibration-images DIR_OR_GLOB'
                           % which)
    return sorted(set(paths))[:CALIBRATION_IMAGES], which


def write_form(args, export_dir, temporary, info, calibration):
    """Write the form --int8 or --tflite asks for at `temporary`; returns its name and how it was made."""
    if args.tflite:
        tflite_export.convert_apart(export_dir, temporary, args.tflite_type, info, calibration)
        return 'TFLite %s' % args.tflite_type, 'tf.lite.TFLiteConverter, TensorFlow %s' % tf.__version__
    with tempfile.TemporaryDirectory(prefix='fcn8-float-onnx-') as scratch:
        float_path = os.path.join(scratch, 'float.onnx')
        convert_apart(export_dir, float_path, args.opset)
        quantize.quantize_int8(float_path, temporary, calibration, info.image_shape)
    return 'int8 ONNX', ('onnxruntime %s quantize_static: QDQ, int8 weights per channel, uint8 activations, the '
                         'first convolution float' % onnxruntime.__version__)


def export_checked_form(args, export_dir, target):
    """Write the int8 ONNX or TFLite form, check it against the float SavedModel on labelled images, then keep it
    or refuse in one line."""
    run_config = run_config_of(args, export_dir)
    pairs, checked_on = check_pairs(run_config)
    calibration, calibrated_on = calibration_paths(args, run_config) if calibrated(args) else ([], '')
    exported = inference.ExportedModel(export_dir)
    try:
        with atomic.staged_path(target) as temporary:
            name, how = write_form(args, export_dir, temporary, exported.info, calibration)
            print('export: converted %s to %s (%s)%s' % (export_dir, name, how, '; calibrated on %d image(s) of %s'
                                                         % (len(calibration), calibrated_on) if calibration else ''))
            form = files.open_model(temporary)
            try:
                check = form_check.compare(exported, form, pairs, datasets.label_format(
                    exported.info.dataset, exported.info.classes).to_onehot)
            finally:
                form.close()
            print('export: %s against the float SavedModel on %s, each at its own size: %s'
                  % (name, checked_on, check.summary()))
            reason = form_check.refusal(check, args.max_change, 'the ' + name)
            if reason:
                raise ModelError(reason)
    finally:
        exported.close()
    print('export: wrote %s (%.1f MB)' % (target, os.path.getsize(target) / 1e6))
