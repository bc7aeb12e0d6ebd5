"""Tests of what a trained run offers for deployment: the export's serving signature (inference.py, read by the
SavedModel loader and by saved_model_cli) and the ONNX model (onnx_export.py, onnx_model.py): conversion,
the check against TensorFlow and its refusals, and infer with onnxruntime where TensorFlow does not import.
"""
import json
import os
import re
import shutil
import subprocess

import imageio.v3 as iio
import numpy as np
import onnx
import pytest

from roadseg import config
from roadseg.data import roadgen
from roadseg.errors import ModelError
from roadseg.process import graph_mode_tf
from roadseg.serving import inference, onnx_export, onnx_model
from tests.helpers import SMALL_SHAPE, main_py, run_main, write_png

tf = graph_mode_tf()

SIGNATURE_TIMEOUT = 120


@pytest.fixture(scope='module')
def exported_onnx(tmp_path_factory, small_trained_run):
    """(path, stdout) of python main.py export of the small trained run."""
    path = str(tmp_path_factory.mktemp('onnx') / 'model.onnx')
    stdout, exit_value = run_main(['export', '--model', small_trained_run, '--onnx', path])
    assert exit_value is None, (stdout, exit_value)
    return path, stdout


def _test_image(shape=(70, 130), seed=4):
    return roadgen.render_scene(np.random.default_rng(seed), shape)[0]


def _dims(tensor_info):
    return [dim.size for dim in tensor_info.tensor_shape.dim]


def test_export_has_a_serving_signature_that_the_loader_reads(small_trained_run):
    export_dir = os.path.join(small_trained_run, inference.EXPORT_FOLDER)
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as sess:
        meta_graph = tf.saved_model.loader.load(sess, [inference.SERVE_TAG], export_dir)
        signature = meta_graph.signature_def[inference.SIGNATURE]
        assert signature.method_name == 'tensorflow/serving/predict'
        assert set(signature.inputs) == {'image'} and set(signature.outputs) == {'road_probability', 'probabilities'}
        image, road, classes = signature.inputs['image'], signature.outputs['road_probability'], \
            signature.outputs['probabilities']
        info = config.ModelInfo.from_json(sess.run(inference.MODEL_INFO).decode())
        assert info.classes == 'road' and info.num_classes == 2 and info.image_shape == SMALL_SHAPE, info
        assert (image.dtype, road.dtype, classes.dtype) == (tf.uint8.as_datatype_enum,) + \
            (tf.float32.as_datatype_enum,) * 2
        assert _dims(image) == [-1, -1, -1, 3] and _dims(road) == [-1, -1, -1]
        assert _dims(classes) == [-1, -1, -1, info.num_classes]
        picture = _test_image()
        road_probability, probabilities = sess.run([road.name, classes.name], {image.name: picture[None]})
    assert road_probability.shape == (1,) + picture.shape[:2]
    assert probabilities.shape == (1,) + picture.shape[:2] + (info.num_classes,)
    assert np.allclose(probabilities.sum(axis=-1), 1, atol=1e-5)
    assert np.array_equal(road_probability, probabilities[..., info.road_class])


def test_saved_model_cli_runs_the_serving_signature(small_trained_run, tmp_path):
    cli = shutil.which('saved_model_cli')
    if cli is None:
        pytest.skip('saved_model_cli (installed with TensorFlow) is not on PATH')
    run = small_trained_run
    picture = _test_image((32, 48))
    out = str(tmp_path)
    finished = subprocess.run(
        [cli, 'run', '--dir', os.path.join(run, inference.EXPORT_FOLDER), '--tag_set', inference.SERVE_TAG,
         '--signature_def', inference.SIGNATURE, '--input_exprs', 'image=%r' % picture[None].tolist(),
         '--outdir', out], capture_output=True, text=True, timeout=SIGNATURE_TIMEOUT)
    assert finished.returncode == 0, finished.stderr[-3000:]
    exported = inference.ExportedModel(run)
    try:
        expected = exported([picture])
    finally:
        exported.close()
    assert np.allclose(np.load(os.path.join(out, 'probabilities.npy')), expected, atol=1e-6)
    assert np.allclose(np.load(os.path.join(out, 'road_probability.npy')), expected[..., exported.road_class],
                       atol=1e-6)


def test_onnx_export_matches_tensorflow_and_says_by_how_much(exported_onnx, small_trained_run):
    path, stdout = exported_onnx
    largest = float(re.search(r'largest difference (\S+)', stdout).group(1))
    assert 0 <= largest <= onnx_export.MAX_DIFFERENCE, stdout
    agree, pixels = map(int, re.search(r'masks agree on (\d+) of (\d+) pixels', stdout).groups())
    assert agree == pixels > 0, stdout
    assert 'on 3 test/validation images of the run' in stdout, stdout
    model = onnx.load(path)
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    exported = inference.ExportedModel(small_trained_run)
    exported.close()
    assert config.ModelInfo.from_json(metadata[onnx_model.MODEL_INFO_KEY]) == exported.info
    (image,), outputs = model.graph.input, {output.name: output for output in model.graph.output}
    assert image.name == 'image' and image.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [bool(dim.dim_param) for dim in image.type.tensor_type.shape.dim] == [True, True, True, False]
    assert set(outputs) == {'probabilities', 'road_probability'}


def test_infer_runs_an_onnx_model_where_tensorflow_cannot_be_imported(exported_onnx, small_trained_run, tmp_path):
    path, _ = exported_onnx
    run = small_trained_run
    folder = str(tmp_path)
    blocked = os.path.join(folder, 'blocked', 'tensorflow')
    os.makedirs(blocked)
    with open(os.path.join(blocked, '__init__.py'), 'w') as f:
        f.write("raise ImportError('TensorFlow is blocked in this test')\n")
    environment = dict(os.environ, PYTHONPATH=os.path.dirname(blocked))
    picture = write_png(os.path.join(folder, 'street.png'), _test_image((75, 250)))
    by_onnx, by_savedmodel = os.path.join(folder, 'onnx'), os.path.join(folder, 'savedmodel')
    finished = main_py(['infer', '--model', path, picture, '--out', by_onnx, '--masks'], env=environment)
    assert finished.returncode == 0, finished.stderr[-3000:]
    # The block works: the same command with the SavedModel cannot run there, and says so in one line.
    refused = main_py(['infer', '--model', run, picture, '--out', by_savedmodel], env=environment)
    assert refused.returncode == 1 and 'TensorFlow does not import here' in refused.stderr, refused.stderr[-3000:]
    assert 'Traceback' not in refused.stderr
    stdout, exit_value = run_main(['infer', '--model', run, picture, '--out', by_savedmodel, '--masks'])
    assert exit_value is None, stdout
    for name in ('street_overlay.png', 'street_road.png'):
        difference = np.abs(iio.imread(os.path.join(by_onnx, name)).astype(int)
                            - iio.imread(os.path.join(by_savedmodel, name)))
        assert difference.max() <= 1, (name, difference.max())


def test_export_refuses_a_conversion_onnxruntime_cannot_run_and_writes_nothing(small_trained_run, tmp_path):
    # At opset 9 tf2onnx cannot express the export's half-pixel resize (nor VGG's RGB->BGR flip, ReverseV2): it
    # leaves those nodes as TensorFlow ops, in a model onnxruntime cannot run.
    folder = str(tmp_path)
    target = os.path.join(folder, 'model.onnx')
    stdout, exit_value = run_main(['export', '--model', small_trained_run, '--onnx', target, '--opset', '9'])
    assert 'onnxruntime cannot run' in str(exit_value) and 'Failed to convert node' in str(exit_value), exit_value
    assert '\n' not in str(exit_value)
    assert os.listdir(folder) == []  # neither the model nor a staging file


def test_export_refuses_an_onnx_model_whose_outputs_differ(exported_onnx, small_trained_run, tmp_path):
    # A real mismatch: the converted model with every weight 1% off, checked as export checks a conversion.
    path, _ = exported_onnx
    model = onnx.load(path)
    for initializer in model.graph.initializer:
        if initializer.data_type == onnx.TensorProto.FLOAT and np.prod(initializer.dims) > 1:
            weights = onnx.numpy_helper.to_array(initializer)
            initializer.CopyFrom(onnx.numpy_helper.from_array(weights * np.float32(1.01), initializer.name))
    off = str(tmp_path / 'off.onnx')
    onnx.save_model(model, off)
    run = small_trained_run
    export_dir = os.path.join(run, inference.EXPORT_FOLDER)
    exported = inference.ExportedModel(run)
    try:
        pictures, _ = onnx_export.check_images(run)
        largest, pixels, _, decisive = onnx_export.check_against_tensorflow(
            off, exported, onnx_export.serving_signature(export_dir),
            onnx_export.check_batches(pictures, exported.info.image_shape), [])
    finally:
        exported.close()
    assert largest > onnx_export.MAX_DIFFERENCE and pixels > 0
    assert 'differs from TensorFlow by up to' in onnx_export.refusal(largest, decisive, [])


def test_a_flipped_mask_pixel_is_refused_within_the_difference_limit_unless_it_is_a_tie():
    def outputs(road):
        road = np.asarray(road, np.float32)[None]
        return {'road_probability': road, 'probabilities': np.stack([1 - road, road], axis=-1)}

    reference = outputs([[0.49997, 0.499996, 0.2]])
    assert onnx_export.compare([(reference, outputs([[0.49997, 0.499996, 0.2]]))]) == (0.0, 3, 0, 0)
    # 3e-5 from the threshold in TensorFlow, 3e-5 over it in onnxruntime: within 1e-4, and a real flip.
    largest, pixels, flipped, decisive = onnx_export.compare([(reference, outputs([[0.50003, 0.499996, 0.2]]))])
    assert largest < onnx_export.MAX_DIFFERENCE and (pixels, flipped, decisive) == (3, 1, 1)
    assert 'flips 1 mask pixel' in onnx_export.refusal(largest, decisive, [])
    # 4e-6 from the threshold: a tie, which float rounding decides.
    largest, pixels, flipped, decisive = onnx_export.compare([(reference, outputs([[0.49997, 0.500003, 0.2]]))])
    assert (flipped, decisive) == (1, 0) and onnx_export.refusal(largest, decisive, []) is None
    largest, _, _, decisive = onnx_export.compare([(reference, outputs([[0.49997, 0.499996, np.nan]]))])
    assert onnx_export.refusal(largest, decisive, []) is not None
    assert onnx_export.refusal(2 * onnx_export.MAX_DIFFERENCE, 0, []) is not None


def test_onnx_files_that_are_not_ours_are_refused_in_one_line(exported_onnx, tmp_path):
    folder = str(tmp_path / 'not-ours')
    picture = write_png(os.path.join(folder, 'street.png'), _test_image())
    garbage = os.path.join(folder, 'garbage.onnx')
    with open(garbage, 'wb') as f:
        f.write(b'not a protobuf at all')
    model = onnx.load(exported_onnx[0])
    del model.metadata_props[:]
    foreign = os.path.join(folder, 'foreign.onnx')
    onnx.save_model(model, foreign)
    for path, expected in ((garbage, 'is not an ONNX model onnxruntime'), (foreign, 'not one made by python main.py '
                                                                                   'export'),
                           (os.path.join(folder, 'missing.onnx'), 'no ONNX model at')):
        with pytest.raises(ModelError, match=re.escape(expected)):
            onnx_model.OnnxModel(path)
        stdout, exit_value = run_main(['infer', '--model', path, picture, '--out', folder + '-out'])
        assert str(exit_value).startswith('main.py infer: ') and expected in str(exit_value), exit_value
        assert '\n' not in str(exit_value)


def test_export_does_not_replace_an_existing_file_unasked(small_trained_run, tmp_path):
    target = str(tmp_path / 'model.onnx')
    with open(target, 'w') as f:
        f.write('a file the user keeps')
    stdout, exit_value = run_main(['export', '--model', small_trained_run, '--onnx', target])
    assert '--overwrite' in str(exit_value), exit_value
    with open(target) as f:
        assert f.read() == 'a file the user keeps'


def test_damaged_model_info_in_an_onnx_file_is_refused_in_one_line(exported_onnx, tmp_path):
    picture = write_png(str(tmp_path / 'street.png'), _test_image())
    for damage in ('{not json', '{"dataset": "kitti"}', '[1, 2]', '{"dataset": "mars", "classes": "road", '
                   '"class_names": ["x", "road"], "road_class": 1, "image_shape": [64, 192]}'):
        model = onnx.load(exported_onnx[0])
        onnx.helper.set_model_props(model, {onnx_model.MODEL_INFO_KEY: damage})
        damaged = str(tmp_path / 'damaged.onnx')
        onnx.save_model(model, damaged)
        _, stop = run_main(['infer', '--model', damaged, picture, '--out', str(tmp_path / 'out')])
        assert str(stop).startswith('main.py infer: %s holds damaged metadata' % damaged), stop
        assert '\n' not in str(stop) and 'python main.py export' in str(stop), stop


def test_evaluate_runs_an_onnx_model_and_export_refuses_one(exported_onnx, small_trained_run, small_dataset):
    data_dir = os.path.dirname(small_dataset)
    path, _ = exported_onnx
    by_onnx, stop = run_main(['evaluate', '--model', path, '--data-dir', data_dir, '--json'])
    assert stop is None, stop
    by_savedmodel, stop = run_main(['evaluate', '--model', small_trained_run, '--data-dir', data_dir, '--json'])
    onnx_iou, savedmodel_iou = (json.loads(out.strip().splitlines()[-1])['iou'] for out in (by_onnx, by_savedmodel))
    assert abs(onnx_iou - savedmodel_iou) < 1e-3, (onnx_iou, savedmodel_iou)
    _, stop = run_main(['export', '--model', path, '--onnx', path + '.again.onnx'])
    assert str(stop).startswith('main.py export: --model %s is an ONNX model: export converts a TensorFlow model'
                                % path) and 'or export' not in str(stop), stop
    _, stop = run_main(['export', '--model', os.path.dirname(path), '--onnx', path + '.again.onnx'])
    assert 'no trained model at' in str(stop) and '.onnx file' not in str(stop), stop


def test_export_refuses_targets_that_cannot_be_its_file_before_converting(small_trained_run, tmp_path):
    a_file = str(tmp_path / 'notes.txt')
    with open(a_file, 'w') as f:
        f.write('the user keeps this')
    folder = str(tmp_path / 'models')
    os.makedirs(folder)
    cases = [([os.path.join(a_file, 'x.onnx')], 'is a file, not a folder'),
             ([folder, '--overwrite'], 'is a folder; give the file to write'),
             ([os.path.join(folder, 'm' * 300 + '.onnx')], 'longer than the file system takes')]
    for target, expected in cases:
        stdout, stop = run_main(['export', '--model', small_trained_run, '--onnx'] + target)
        assert str(stop).startswith('main.py export: --onnx ') and expected in str(stop), stop
        assert '\n' not in str(stop) and 'converted' not in stdout, (stdout, stop)
    assert os.listdir(folder) == [] and sorted(os.listdir(str(tmp_path))) == ['models', 'notes.txt']
