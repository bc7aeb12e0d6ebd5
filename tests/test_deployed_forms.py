"""Tests of the faster deployed forms (export --int8, export --tflite; quantize.py, tflite_export.py,
tflite_model.py, evaluation/form_check.py): each form made from the small trained run, its outputs against the
float SavedModel's on the run's own labelled images, the refusal of a form that fails its check, and infer
running each form on images and on a video. The bench's table of the forms is checked on its own figures.
"""
import os
import re

import imageio.v3 as iio
import numpy as np
import pytest

from roadseg import config
from roadseg.commands import bench_forms
from roadseg.config import RunConfig
from roadseg.data import images, roadgen
from roadseg.serving import files, inference
from tests.helpers import run_main, write_png
from tests.test_video import _read_video, _road_frames, _write_video

# The small trained run is two epochs old: its road probabilities sit near 0.5 everywhere, where the int8
# forms' coarser steps decide most pixels. These are the bounds its outputs are held to (the command's own
# check, on MaxF and IoU, is --max-change). TFLite int8 gives the probabilities themselves in steps of 1/256.
LARGEST_DIFFERENCE = {'onnx_int8': 0.05, 'tflite_float16': 0.01, 'tflite_int8': 0.15}
# TFLite int8 quantizes the logits, the softmax and the upsampling too: on this run it moves MaxF by about 1.8
# points (docs/deployment.md), so its test states a limit of its own.
TFLITE_INT8_LIMIT = 3.0
CHECK_LINE = re.compile(r'road MaxF ([\d.]+) -> ([\d.]+) \(([+-][\d.]+) points\), IoU ([\d.]+) -> ([\d.]+) '
                        r'\(([+-][\d.]+) points\)')


def _export(tmp_path_factory, run, name, *flags):
    """(path, stdout) of python main.py export of the run into a new folder, which must succeed."""
    path = str(tmp_path_factory.mktemp('forms') / name)
    stdout, exit_value = run_main(['export', '--model', run] + list(flags[:1]) + [path] + list(flags[1:]))
    assert exit_value is None, (stdout, exit_value)
    return path, stdout


@pytest.fixture(scope='module')
def forms(tmp_path_factory, small_trained_run):
    """{form: (path, export's stdout)} of the three checked forms of the small trained run."""
    return {'onnx_int8': _export(tmp_path_factory, small_trained_run, 'model-int8.onnx', '--onnx', '--int8'),
            'tflite_float16': _export(tmp_path_factory, small_trained_run, 'model.tflite', '--tflite'),
            'tflite_int8': _export(tmp_path_factory, small_trained_run, 'model-int8.tflite', '--tflite',
                                   '--tflite-type', 'int8', '--max-change', str(TFLITE_INT8_LIMIT))}


def _labelled_images(run):
    with open(os.path.join(run, config.RUN_CONFIG_FILE)) as f:
        return RunConfig.from_json(f.read(), 'run.json').val


@pytest.mark.parametrize('form', sorted(LARGEST_DIFFERENCE))
def test_each_form_matches_the_float_model_on_the_runs_images_within_its_limits(forms, small_trained_run, form):
    path, stdout = forms[form]
    limit = TFLITE_INT8_LIMIT if form == 'tflite_int8' else config.DEPLOYED_MAX_CHANGE_POINTS
    (maxf, form_maxf, maxf_change, iou, form_iou, iou_change), = CHECK_LINE.findall(stdout)
    assert "on the run's 3 labelled validation images" in stdout and 'wrote %s' % path in stdout, stdout
    for before, after, change in ((maxf, form_maxf, maxf_change), (iou, form_iou, iou_change)):
        assert abs(float(change)) <= limit and abs(100 * (float(after) - float(before)) - float(change)) < 0.011
    # The outputs themselves, read back from the file, against the SavedModel's on the same images.
    reference, candidate = inference.ExportedModel(small_trained_run), files.open_model(path)
    try:
        assert candidate.info == reference.info
        for image_path, _ in _labelled_images(small_trained_run):
            image = images.read_rgb(image_path)
            expected, found = reference([image])[0], candidate([image])[0]
            assert found.shape == expected.shape and found.dtype == np.float32
            assert np.abs(found - expected).max() < LARGEST_DIFFERENCE[form], np.abs(found - expected).max()
            assert np.allclose(found.sum(axis=-1), 1, atol=0.02)
    finally:
        reference.close()
        candidate.close()


def test_a_form_that_fails_its_check_is_refused_in_one_line_and_nothing_is_written(forms, small_trained_run,
                                                                                    tmp_path):
    # The same conversion as the kept TFLite int8, held to a limit it cannot meet: no change at all.
    changes = [abs(float(change)) for change in CHECK_LINE.findall(forms['tflite_int8'][1])[0][2::3]]
    assert max(changes) > 0
    target = str(tmp_path / 'model.tflite')
    stdout, exit_value = run_main(['export', '--model', small_trained_run, '--tflite', target, '--tflite-type',
                                   'int8', '--max-change', '0'])
    message = str(exit_value)
    assert message.startswith('main.py export: the TFLite int8 changes road ') and '\n' not in message, message
    assert '%.2f points' % max(changes) in message.replace('+', '').replace('-', ''), (message, changes)
    assert 'more than the limit of 0 (--max-change)' in message and 'nothing was written' in message
    assert os.listdir(str(tmp_path)) == []  # neither the model nor a staging file


def test_infer_runs_each_form_on_images_and_on_a_video(forms, tmp_path):
    folder = str(tmp_path)
    picture = write_png(os.path.join(folder, 'street.png'), roadgen.render_scene(np.random.default_rng(4),
                                                                                 (75, 250))[0])
    frames = _road_frames(4)
    clip = _write_video(os.path.join(folder, 'drive.mkv'), frames)
    for form, (path, _) in sorted(forms.items()):
        out = os.path.join(folder, form)
        stdout, exit_value = run_main(['infer', '--model', path, picture, clip, '--out', out, '--masks'])
        assert exit_value is None and 'infer: 1 of 1 images and 1 of 1 videos written' in stdout, (form, stdout)
        assert iio.imread(os.path.join(out, 'street_overlay.png')).shape == (75, 250, 3)
        assert iio.imread(os.path.join(out, 'street_road.png')).shape == (75, 250)
        assert _read_video(os.path.join(out, 'drive_overlay.mp4'))[0].shape == frames.shape


def test_flags_for_another_form_are_refused_in_one_line(small_trained_run, tmp_path):
    target = str(tmp_path / 'model.onnx')
    for flags, expected in ((['--onnx', target, '--tflite-type', 'int8'], '--tflite-type goes with --tflite'),
                            (['--tflite', target, '--int8'], '--int8 goes with --onnx'),
                            (['--onnx', target, '--max-change', '1'], '--max-change goes with --int8 or --tflite'),
                            (['--tflite', target, '--calibration-images', str(tmp_path)],
                             '--calibration-images goes with --int8 or --tflite-type int8')):
        stdout, exit_value = run_main(['export', '--model', small_trained_run] + flags)
        assert str(exit_value).startswith('main.py export: ' + expected), (flags, exit_value)
    assert os.listdir(str(tmp_path)) == []


def test_the_bench_table_shows_every_form_as_a_ratio_to_the_savedmodel():
    timings = {'savedmodel': {'64x96': (0.5, 700.0), '375x1242': (2.0, 900.0)},
               'onnx': {'64x96': (0.25, 650.0), '375x1242': (1.0, 800.0)}}
    measured = {form: {'timings': timings.get(form, timings['onnx']), 'maxf': 0.9, 'iou': 0.8}
                for form in bench_forms.FORMS}
    measured['savedmodel']['maxf'] = 0.91
    results = bench_forms.form_figures(measured, 2, 8)
    assert results['form_savedmodel_64x96_ips'] == 4 and results['form_onnx_int8_375x1242_ips_ratio'] == 2
    assert results['form_tflite_int8_64x96_peak_rss_mb'] == 650 and results['form_savedmodel_64x96_ips_ratio'] == 1
    assert np.isclose(results['form_onnx_maxf_change'], -1)
    lines = bench_forms.form_lines(results)
    assert len(lines) == 1 + len(bench_forms.FORMS) and 'on 8 training images' in lines[0]
    assert '64x96   8.00/s (2.00x)   650 MB' in lines[2] and '(-1.00 points)' in lines[2], lines[2]
