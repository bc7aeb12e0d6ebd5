"""The deployed forms side by side, for python main.py bench: the SavedModel, ONNX float32, ONNX int8 and TFLite
(float16 and int8) of the bench's model, each timed at the network's input size and at full KITTI size in a
process of its own (its peak memory is then its own), and each scored (road MaxF and IoU) on the same labelled
images.

The forms are made in one more process (calibration and conversion take memory that no timing should carry),
exactly as main.py export makes them; the int8 forms are calibrated on other images than they are scored on.
The figures are flat keys of the bench's JSON: form_<form>_<H>x<W>_ips, _ips_ratio (to the SavedModel's),
_peak_rss_mb, and form_<form>_maxf, _iou, _maxf_change (points, against the SavedModel's).
"""
import json
import os
import sys

from roadseg import process
from roadseg.commands import bench
from roadseg.data import datasets
from roadseg.evaluation import scoring
from roadseg.serving import files, quantize, tflite_export

FORMS = ('savedmodel', 'onnx', 'onnx_int8', 'tflite_float16', 'tflite_int8')
FORM_NAMES = {'savedmodel': 'SavedModel (float32)', 'onnx': 'ONNX float32', 'onnx_int8': 'ONNX int8',
              'tflite_float16': 'TFLite float16', 'tflite_int8': 'TFLite int8'}
SCORED_IMAGES = 8       # the first images of the bench's training folder score every form
CALIBRATED_ON = 8       # the next ones calibrate the int8 forms
MAKE_COMMAND = '_make-forms'
TIME_COMMAND = '_time-form'


def shape_name(shape):
    return '%dx%d' % tuple(shape)


def form_paths(scratch):
    """{form: its file or folder in the bench's scratch folder}; export/ and model.onnx are the bench's own."""
    return {'savedmodel': os.path.join(scratch, 'export'), 'onnx': os.path.join(scratch, 'model.onnx'),
            'onnx_int8': os.path.join(scratch, 'model-int8.onnx'),
            'tflite_float16': os.path.join(scratch, 'model-float16.tflite'),
            'tflite_int8': os.path.join(scratch, 'model-int8.tflite')}


def make_forms(scratch, image_shape, calibration_paths):
    """Write the int8 ONNX and the two TFLite forms of scratch/export and scratch/model.onnx."""
    paths, info = form_paths(scratch), bench.bench_model_info(image_shape)
    quantize.quantize_int8(paths['onnx'], paths['onnx_int8'], calibration_paths, image_shape)
    for kind in ('float16', 'int8'):
        tflite_export.convert_apart(paths['savedmodel'], paths['tflite_' + kind], kind, info, calibration_paths)


def time_form(path, shapes, batch_size, min_seconds, pairs):
    """{shape name: (seconds per batch, peak memory in MB so far)} of the model at `path` run as main.py infer
    runs it, on each shape in increasing size; and its road MaxF and IoU on the labelled `pairs`."""
    process.cache_kernel_layouts()  # as infer sets the process up for a SavedModel; the other forms ignore it
    predict = files.open_model(path)
    try:
        figures = {}
        for shape in shapes:
            images = bench.timing_images(shape, batch_size)
            step_s = bench.seconds_per_step(lambda: predict(images), bench.INFER_WARMUP_STEPS, min_seconds)
            figures[shape_name(shape)] = (step_s, bench.peak_rss_mb())
        measures = scoring.evaluate(predict, pairs, description='scoring')[0].result()
    finally:
        predict.close()
    return {'timings': figures, 'maxf': measures['maxf'], 'iou': measures['iou']}


def measure_forms(scratch, training_folder, image_shape, batch_size, min_seconds):
    """Every form's figures (see the module's docstring), made and timed in processes of their own."""
    pairs = datasets.kitti_road_pairs(training_folder)
    scored, calibration = pairs[:SCORED_IMAGES], [image for image, _ in pairs[SCORED_IMAGES:][:CALIBRATED_ON]]
    bench.progress('making the int8 ONNX and the TFLite forms, calibrated on %d image(s)'
                   % len(calibration or scored))
    _apart(MAKE_COMMAND, scratch, *image_shape, *(calibration or [image for image, _ in scored]))
    shapes = sorted({tuple(image_shape), bench.KITTI_IMAGE_SHAPE}, key=lambda shape: shape[0] * shape[1])
    measured = {}
    for form, path in form_paths(scratch).items():
        bench.progress('%s at %s, in a process of its own' % (FORM_NAMES[form], ' and '.join(map(shape_name, shapes))))
        measured[form] = _apart(TIME_COMMAND, path, json.dumps(shapes), batch_size, min_seconds, json.dumps(scored))
    return form_figures(measured, batch_size, len(scored))


def form_figures(measured, batch_size, scored_images):
    """The flat JSON keys of the forms' figures from each form's time_form results."""
    reference = measured['savedmodel']
    results = {'form_scored_images': scored_images}
    for form, figures in measured.items():
        for shape, (step_s, peak_mb) in figures['timings'].items():
            prefix = 'form_%s_%s_' % (form, shape)
            results[prefix + 'ips'] = batch_size / step_s
            results[prefix + 'ips_ratio'] = reference['timings'][shape][0] / step_s
            results[prefix + 'peak_rss_mb'] = peak_mb
        results.update({'form_%s_maxf' % form: figures['maxf'], 'form_%s_iou' % form: figures['iou'],
                        'form_%s_maxf_change' % form: 100 * (figures['maxf'] - reference['maxf'])})
    return results


def form_lines(results):
    """The bench table's lines of the forms, a row each (none when the bench ran without them)."""
    shapes = sorted({key.split('_')[-2] for key in results if key.startswith('form_savedmodel_')
                     and key.endswith('_ips')}, key=lambda name: int(name.split('x')[0]))
    if not shapes:
        return []
    lines = ['  deployed forms, each in a process of its own as main.py infer runs it; images/s (x the SavedModel), '
             'peak memory; road MaxF on %d training images:' % results['form_scored_images']]
    for form in FORMS:
        figures = ['%s %6.2f/s (%.2fx) %5.0f MB' % (shape, results['form_%s_%s_ips' % (form, shape)],
                                                      results['form_%s_%s_ips_ratio' % (form, shape)],
                                                      results['form_%s_%s_peak_rss_mb' % (form, shape)])
                   for shape in shapes]
        lines.append('    %-21s %s  MaxF %.4f (%+.2f points)' % (FORM_NAMES[form], '   '.join(figures),
                                                                  results['form_%s_maxf' % form],
                                                                  results['form_%s_maxf_change' % form]))
    return lines


def _apart(command, *argv):
    """This module's `command` in a child process: the JSON it prints last (None if it prints none)."""
    finished = process.run_module_apart('roadseg.commands.bench_forms', command, *argv, capture_output=True,
                                        text=True, timeout=bench.CHILD_TIMEOUT)
    if finished.returncode:
        raise RuntimeError('%s failed with exit status %d:\n%s' % (command, finished.returncode,
                                                                     finished.stderr[-3000:]))
    lines = finished.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else None


def _command(argv):
    if argv[0] == MAKE_COMMAND:
        scratch, height, width, *calibration = argv[1:]
        make_forms(scratch, (int(height), int(width)), calibration)
    else:
        path, shapes, batch_size, min_seconds, pairs = argv[1:]
        print(json.dumps(time_form(path, [tuple(shape) for shape in json.loads(shapes)], int(batch_size),
                                   float(min_seconds), [tuple(pair) for pair in json.loads(pairs)])))


if __name__ == '__main__':
    _command(sys.argv[1:])
