"""A trained model at work: the export, evaluate's measures, infer's files, the classic helper functions."""
import dataclasses
import glob
import json
import os
import shutil

import imageio.v3 as iio
import numpy as np

import helper
from roadseg import model
from roadseg.data import datasets, images
from roadseg.process import graph_mode_tf
from roadseg.serving import inference
from roadseg.training import run_folder
from tests.helpers import SMALL_SHAPE, child_environment, main_py, run_main, write_png

tf = graph_mode_tf()


# --------------------------------------------------------------------------- the export

def test_a_flip_averaged_export_is_the_mean_of_the_image_and_its_mirror_in_training_and_export(
        small_trained_run, small_dataset, small_vgg, tmp_path):
    run = run_folder.RunFolder(small_trained_run)
    prefix = run.checkpoint('best')[0]
    scenes = [images.read_rgb(p) for p in datasets.kitti_test_images(small_dataset)[:2]]
    plain = inference.ExportedModel(small_trained_run)
    info = dataclasses.replace(plain.info, flip_average=True)
    flipped = inference.ExportedModel(inference.export_inference_model(prefix, str(tmp_path / 'flip'), small_vgg,
                                                                       info, (1, 1)))
    try:
        assert flipped.info.flip_average and not plain.info.flip_average
        for scene in scenes:
            expected = 0.5 * (plain([scene])[0] + plain([scene[:, ::-1]])[0][:, ::-1])
            assert np.abs(flipped([scene])[0] - expected).max() < 1e-4
            assert np.abs(flipped([scene])[0] - plain([scene])[0]).max() > 1e-3, 'the mirror changes something'
            mirrored = flipped([np.ascontiguousarray(scene[:, ::-1])])[0]
            assert np.abs(mirrored[:, ::-1] - flipped([scene])[0]).max() < 1e-4, 'symmetric by construction'
    finally:
        plain.close(), flipped.close()
    with tf.Graph().as_default(), tf.Session() as sess:
        fcn8 = model.build_fcn8(sess, small_vgg, 2, skip_scales=(1, 1))
        tf.train.Saver(tf.global_variables()).restore(sess, prefix)
        predict = inference.SessionPredictor(sess, fcn8.logits, fcn8.keep_prob, fcn8.image_input, SMALL_SHAPE,
                                             flip_average=True)
        exported = inference.ExportedModel(str(tmp_path / 'flip'))
        try:
            assert np.abs(predict(scenes[:1])[0] - exported(scenes[:1])[0]).max() < 0.02, 'validation sees the same'
        finally:
            exported.close()


def test_a_scale_averaged_export_is_the_mean_of_the_network_at_each_input_size_in_training_and_export(
        small_trained_run, small_dataset, small_vgg, tmp_path):
    prefix = run_folder.RunFolder(small_trained_run).checkpoint('best')[0]
    scene = images.read_rgb(datasets.kitti_test_images(small_dataset)[0])
    plain = inference.ExportedModel(small_trained_run)
    scales = (0.5, 1.0, 1.5)
    shapes = inference.input_shapes(plain.info.image_shape, scales)
    assert shapes == [(32, 96), SMALL_SHAPE, (96, 288)]
    singles = [inference.ExportedModel(inference.export_inference_model(
        prefix, str(tmp_path / ('%dx%d' % shape)), small_vgg, dataclasses.replace(plain.info, image_shape=shape),
        (1, 1))) for shape in shapes]
    averaged = inference.ExportedModel(inference.export_inference_model(
        prefix, str(tmp_path / 'scales'), small_vgg, dataclasses.replace(plain.info, scales=scales), (1, 1)))
    try:
        maps = [single([scene])[0] for single in singles]
        assert averaged.info.scales == scales and plain.info.scales == (1.0,)
        assert np.abs(averaged([scene])[0] - np.mean(maps, axis=0)).max() < 1e-4
        assert np.abs(maps[0] - maps[2]).max() > 1e-3, 'the sizes see the image differently'
    finally:
        for exported in singles + [plain, averaged]:
            exported.close()
    with tf.Graph().as_default(), tf.Session() as sess:
        fcn8 = model.build_fcn8(sess, small_vgg, 2, skip_scales=(1, 1))
        model.restore_checkpoint(sess, prefix)
        predict = inference.SessionPredictor(sess, fcn8.logits, fcn8.keep_prob, fcn8.image_input, SMALL_SHAPE,
                                             scales=scales)
        assert np.abs(predict([scene])[0] - np.mean(maps, axis=0)).max() < 0.02, 'validation sees the same'


def test_exported_model_matches_the_trained_graph_at_any_size(small_trained_run, small_dataset, small_vgg):
    run = run_folder.RunFolder(small_trained_run)
    scenes = [images.read_rgb(p) for p in datasets.kitti_test_images(small_dataset)[:3]]
    assert len({scene.shape for scene in scenes}) > 1, 'images of several sizes'
    exported = inference.ExportedModel(small_trained_run)
    try:
        exported_probabilities = [exported([scene])[0] for scene in scenes]
        assert exported.info.image_shape == SMALL_SHAPE and exported.info.classes == 'road'
    finally:
        exported.close()
    with tf.Graph().as_default(), tf.Session() as sess:
        fcn8 = model.build_fcn8(sess, small_vgg, 2, skip_scales=(1, 1))
        tf.train.Saver(tf.global_variables()).restore(sess, run.checkpoint('best')[0])
        predict = inference.SessionPredictor(sess, fcn8.logits, fcn8.keep_prob, fcn8.image_input, SMALL_SHAPE)
        for scene, probability in zip(scenes, exported_probabilities):
            assert probability.shape == scene.shape[:2] + (2,)
            assert np.abs(predict([scene])[0] - probability).max() < 1e-3  # same resize, same model


def test_evaluate_and_infer_refuse_what_is_not_a_trained_model_in_one_line(small_dataset, small_vgg, tmp_path):
    data = os.path.dirname(small_dataset)
    for model_dir, expected in ((small_vgg, 'a VGG16 encoder is tagged "vgg16"'),
                                (str(tmp_path), 'no trained model at')):
        _, stop = run_main(['evaluate', '--model', model_dir, '--data-dir', data])
        assert expected in str(stop) and '\n' not in str(stop), stop
        _, stop = run_main(['infer', '--model', model_dir, datasets.kitti_test_images(small_dataset)[0]])
        assert expected in str(stop), stop


# --------------------------------------------------------------------------- evaluate

def _labels_from_predictions(folder, data_road, exported, flip_where=None):
    """A KITTI training folder whose labels are the model's own road masks (p > 0.5)."""
    for i, (image_path, _) in enumerate(datasets.kitti_road_pairs(os.path.join(data_road, 'training'))[:6]):
        image = images.read_rgb(image_path)
        road = exported([image])[0][..., 1] > 0.5
        label = np.zeros(image.shape, np.uint8)
        label[:] = datasets.NOT_ROAD_COLOR
        label[road] = datasets.ROAD_COLOR
        if flip_where is not None:
            label[flip_where(road)] = 0  # don't care
        name = os.path.basename(image_path)
        shutil.copy(image_path, os.path.join(folder, 'image_2', name))
        write_png(os.path.join(folder, 'gt_image_2', name.replace('_', '_road_', 1)), label)


def _kitti_folder_from_predictions(data_dir, run, data_road, flip_where=None):
    training = os.path.join(data_dir, 'data_road', 'training')
    os.makedirs(os.path.join(training, 'image_2'))
    os.makedirs(os.path.join(training, 'gt_image_2'))
    exported = inference.ExportedModel(run)
    try:
        _labels_from_predictions(training, data_road, exported, flip_where)
    finally:
        exported.close()
    return data_dir


def _evaluate_json(run, data_dir):
    out, stop = run_main(['evaluate', '--model', run, '--data-dir', data_dir, '--json'])
    assert stop is None, stop
    return out, json.loads(out.strip().splitlines()[-1])


def test_evaluate_scores_a_model_against_its_own_masks_perfectly_and_leaves_dont_care_out(
        small_trained_run, small_dataset, new_folder):
    run = small_trained_run
    out, figures = _evaluate_json(run, _kitti_folder_from_predictions(new_folder('own-labels'), run, small_dataset))
    assert figures['iou'] == 1.0 and figures['images'] == 6, figures
    assert 'MaxF' in out and 'um ' in out
    # The same labels with half of the road marked don't care where the model said road, and its
    # not-road neighbours too: counted, those pixels would change precision and recall.
    def half_dont_care(road):
        region = np.zeros_like(road)
        region[:, : road.shape[1] // 2] = True
        return region
    _, figures = _evaluate_json(run, _kitti_folder_from_predictions(new_folder('own-labels'), run, small_dataset,
                                                                    half_dont_care))
    assert figures['iou'] == 1.0, figures


def test_evaluate_measures_what_an_independent_count_gives(small_trained_run, small_dataset):
    """IoU at p > 0.5 counted here by hand from the export's probabilities and the label colours."""
    data_dir = os.path.dirname(small_dataset)
    _, figures = _evaluate_json(small_trained_run, data_dir)
    exported = inference.ExportedModel(small_trained_run)
    tp = fp = fn = 0
    try:
        for image_path, label_path in datasets.kitti_road_pairs(os.path.join(small_dataset, 'training')):
            predicted = exported([iio.imread(image_path)])[0][..., 1] > 0.5
            label = iio.imread(label_path)
            road, care = (label == (255, 0, 255)).all(axis=-1), label[..., 0] > 0
            tp += (predicted & road & care).sum()
            fp += (predicted & ~road & care).sum()
            fn += (~predicted & road & care).sum()
    finally:
        exported.close()
    assert abs(figures['iou'] - tp / (tp + fp + fn)) < 1e-9, (figures['iou'], tp / (tp + fp + fn))


def test_evaluate_says_what_is_undefined_and_json_stays_json(small_trained_run, tmp_path):
    data_dir = str(tmp_path)
    training = os.path.join(data_dir, 'data_road', 'training')
    for i, category in enumerate(['um', 'um', 'uu']):
        image = np.full((40, 60, 3), 90, np.uint8)
        label = np.zeros((40, 60, 3), np.uint8)
        if category == 'um':
            label[:] = datasets.NOT_ROAD_COLOR  # labelled, but no road: MaxF and AP are undefined
        write_png(os.path.join(training, 'image_2', '%s_%06d.png' % (category, i)), image)
        write_png(os.path.join(training, 'gt_image_2', '%s_road_%06d.png' % (category, i)), label)
    out, stop = run_main(['evaluate', '--model', small_trained_run, '--data-dir', data_dir, '--json'])
    assert stop is None, (out, stop)
    assert "uu: every pixel is don't care" in out and 'no road pixel' in out, out
    figures = json.loads(out.strip().splitlines()[-1])  # strict JSON: NaN would not parse as null
    assert figures['maxf'] is None and figures['ap'] is None and figures['images'] == 3
    assert 'NaN' not in out.strip().splitlines()[-1]
    for name in glob.glob(os.path.join(training, 'gt_image_2', '*')):
        write_png(name, np.zeros((40, 60, 3), np.uint8))
    _, stop = run_main(['evaluate', '--model', small_trained_run, '--data-dir', data_dir])
    assert stop is None or '\n' not in str(stop)


# --------------------------------------------------------------------------- infer

def _inputs(folder):
    """Images to infer on, in `folder`: two PNGs, a JPEG and a file that is no image."""
    write_png(os.path.join(folder, 'a.png'), np.full((50, 70, 3), 90, np.uint8))
    write_png(os.path.join(folder, 'x.png'), np.full((66, 120, 3), 150, np.uint8))
    iio.imwrite(os.path.join(folder, 'x.jpg'), np.full((40, 60, 3), 200, np.uint8))
    with open(os.path.join(folder, 'broken.png'), 'wb') as f:
        f.write(b'not an image')
    return folder


def _listing(folder):
    return {name: os.path.getmtime(os.path.join(folder, name)) for name in sorted(os.listdir(folder))}


def test_infer_writes_overlays_and_masks_with_distinct_names_and_reports_bad_inputs(small_trained_run, new_folder):
    inputs = _inputs(new_folder('infer-in'))
    out = os.path.join(new_folder('infer-out'), 'out')
    text, stop = run_main(['infer', '--model', small_trained_run, inputs, '--out', out, '--masks'])
    assert stop == 1 and '3 of 4 images written' in text and '1 unreadable' in text, (text, stop)
    assert sorted(os.listdir(out)) == ['a_overlay.png', 'a_road.png', 'x_jpg_overlay.png', 'x_jpg_road.png',
                                       'x_png_overlay.png', 'x_png_road.png']
    assert iio.imread(os.path.join(out, 'x_png_overlay.png')).shape == (66, 120, 3)
    assert iio.imread(os.path.join(out, 'x_jpg_road.png')).shape == (40, 60)
    _, stop = run_main(['infer', '--model', small_trained_run, os.path.join(inputs, 'nothing*.png')])
    assert 'nothing to run on' in str(stop)


def test_infer_never_replaces_inputs_or_earlier_outputs_unless_asked(small_trained_run, tmp_path):
    inputs = _inputs(str(tmp_path))
    os.remove(os.path.join(inputs, 'broken.png'))
    before = _listing(inputs)
    text, stop = run_main(['infer', '--model', small_trained_run, inputs, '--out', inputs])
    assert stop is None, stop
    after = _listing(inputs)
    assert all(after[name] == stamp for name, stamp in before.items()), 'the inputs are untouched'
    assert set(after) - set(before) == {'a_overlay.png', 'x_png_overlay.png', 'x_jpg_overlay.png'}
    again = _listing(inputs)
    _, stop = run_main(['infer', '--model', small_trained_run, os.path.join(inputs, 'a.png'), '--out', inputs])
    assert 'already exist' in str(stop) and '--overwrite' in str(stop), stop
    assert _listing(inputs) == again, 'a refused infer writes nothing'
    text, stop = run_main(['infer', '--model', small_trained_run, os.path.join(inputs, 'a.png'), '--out', inputs,
                           '--overwrite'])
    assert stop is None and '1 of 1 images written' in text
    _, stop = run_main(['infer', '--model', small_trained_run, os.path.join(inputs, 'a.png'), '--out',
                        small_trained_run])
    assert 'is a run folder' in str(stop), stop


def test_a_failed_infer_leaves_no_empty_run_folder(small_trained_run, tmp_path):
    cwd = str(tmp_path)
    broken = os.path.join(cwd, 'broken.png')
    with open(broken, 'wb') as f:
        f.write(b'nope')
    finished = main_py(['infer', '--model', small_trained_run, broken], cwd=cwd)
    assert finished.returncode == 1 and 'Traceback' not in finished.stderr, finished.stderr[-2000:]
    assert os.listdir(cwd) == ['broken.png'], os.listdir(cwd)


def test_infer_in_its_own_process_caches_kernels_and_predicts_as_without(small_trained_run, small_dataset,
                                                                         new_folder):
    # python main.py infer switches on oneDNN's kernel caching (TF reads it once per process): its masks must
    # equal those of an ExportedModel in this process, which trains too and so never caches.
    inputs, out = new_folder('cached-in'), new_folder('cached-out')
    shutil.copy(datasets.kitti_test_images(small_dataset)[0], os.path.join(inputs, 'scene.png'))
    finished = main_py(['infer', '--model', small_trained_run, inputs, '--out', out, '--masks'],
                       env=child_environment())
    assert finished.returncode == 0 and '1 of 1 images written' in finished.stdout, finished.stderr[-2000:]
    exported = inference.ExportedModel(small_trained_run)
    try:
        road = exported([images.read_rgb(os.path.join(inputs, 'scene.png'))])[0][..., exported.road_class]
    finally:
        exported.close()
    mask = iio.imread(os.path.join(out, 'scene_road.png')).astype(int)
    assert mask.shape == road.shape and np.abs(mask - np.rint(road * 255)).max() <= 1


# --------------------------------------------------------------------------- the classic helper functions

def _write_test_images(data_dir, sizes):
    for i, (height, width) in enumerate(sizes):
        image = np.random.default_rng(i).integers(0, 256, (height, width, 3)).astype(np.uint8)
        write_png(os.path.join(data_dir, 'data_road', 'testing', 'image_2', 'uu_%06d.png' % i), image)


def test_save_inference_samples_writes_overlays_at_original_sizes(small_vgg, new_folder):
    data_dir = new_folder('samples')
    sizes = [(70, 190), (72, 191), (70, 190), (75, 200), (64, 192)]
    _write_test_images(data_dir, sizes)
    runs_dir = os.path.join(new_folder('runs'), 'runs')
    with tf.Graph().as_default(), tf.Session() as sess:
        fcn8 = model.build_fcn8(sess, small_vgg, 2)
        output_dir = helper.save_inference_samples(runs_dir, data_dir, sess, SMALL_SHAPE, fcn8.logits,
                                                   fcn8.keep_prob, fcn8.image_input)
    assert os.path.dirname(output_dir) == runs_dir
    written = sorted(os.listdir(output_dir))
    assert written == ['uu_%06d.png' % i for i in range(len(sizes))], written
    for name, size in zip(written, sizes):
        overlay = iio.imread(os.path.join(output_dir, name))
        original = iio.imread(os.path.join(data_dir, 'data_road', 'testing', 'image_2', name))
        assert overlay.shape == size + (3,)
        changed = (overlay != original).any(axis=-1)
        assert (overlay[changed][:, 1] >= original[changed][:, 1]).all(), 'only green is added'


def test_gen_test_output_builds_the_softmax_once(small_vgg, tmp_path):
    data_dir = str(tmp_path)
    _write_test_images(data_dir, [(64, 192)] * 3 + [(66, 190)] * 2)
    with tf.Graph().as_default(), tf.Session() as sess:
        fcn8 = model.build_fcn8(sess, small_vgg, 2)
        before = len(sess.graph.get_operations())
        outputs = list(helper.gen_test_output(sess, fcn8.logits, fcn8.keep_prob, fcn8.image_input,
                                              os.path.join(data_dir, 'data_road', 'testing'), SMALL_SHAPE,
                                              batch_size=2))
        added = len(sess.graph.get_operations()) - before
        assert len(outputs) == 5 and added < 30, added


def test_evaluate_json_when_every_pixel_is_dont_care_is_nulls(small_trained_run, tmp_path):
    data_dir = str(tmp_path)
    training = os.path.join(data_dir, 'data_road', 'training')
    for i in range(2):
        write_png(os.path.join(training, 'image_2', 'um_%06d.png' % i), np.full((40, 60, 3), 90, np.uint8))
        write_png(os.path.join(training, 'gt_image_2', 'um_road_%06d.png' % i), np.zeros((40, 60, 3), np.uint8))
    out, stop = run_main(['evaluate', '--model', small_trained_run, '--data-dir', data_dir, '--json'])
    assert stop is None, (out, stop)
    assert "all: every pixel is don't care" in out, out
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures == dict({key: None for key in figures}, images=2) and 'iou' in figures, figures
