"""The model: the VGG contract and its errors, the VGG builder, build_fcn8 and the training options."""
import os
import re
import shutil

import numpy as np
import pytest

import main
from roadseg import config, errors, model, vgg_builder
from roadseg.data import batches, datasets
from roadseg.process import graph_mode_tf
from roadseg.training import fit
from tests.helpers import SMALL_SHAPE, SMALL_WIDTH, run_main

tf = graph_mode_tf()


# --------------------------------------------------------------------------- load_vgg on bad models

def _write_savedmodel(export_dir, tag, tensor_names):
    with tf.Graph().as_default(), tf.Session() as sess:
        x = tf.placeholder(tf.float32, [None, None, None, 3], name='image_input')
        for name in tensor_names:
            tf.identity(x, name=name)
        builder = tf.saved_model.Builder(export_dir)
        builder.add_meta_graph_and_variables(sess, [tag])
        builder.save()
    return export_dir


def _load_vgg_error(vgg_path, *contains):
    with tf.Graph().as_default(), tf.Session() as sess:
        with pytest.raises(errors.VGGModelError) as caught:
            main.load_vgg(sess, vgg_path)
    message = str(caught.value)
    for text in contains:
        assert text in message, (text, message)
    assert '\n' not in message, 'one line'
    return message


def _damaged_copy(folder, vgg, damage):
    """A copy of the VGG SavedModel `vgg` in `folder`, with `damage` done to it."""
    copy = os.path.join(folder, 'vgg')
    shutil.copytree(vgg, copy)
    damage(copy)
    return copy


def _truncate(path, size):
    with open(path, 'r+b') as f:
        f.truncate(size)


def test_load_vgg_says_in_one_line_what_is_wrong_with_a_bad_model(new_folder, small_vgg):
    folder = new_folder('badvgg')
    _load_vgg_error(os.path.join(folder, 'absent'), 'absent', 'no SavedModel', '--vgg-dir')
    _load_vgg_error(_write_savedmodel(os.path.join(folder, 'wrong_tag'), 'serve', ['layer3_out']),
                    "no graph tagged 'vgg16'")
    _load_vgg_error(_write_savedmodel(os.path.join(folder, 'partial'), 'vgg16', ['layer3_out', 'layer4_out']),
                    'keep_prob:0', 'layer7_out:0', 'image_input')
    data = os.path.join('variables', 'variables.data-00000-of-00001')
    _load_vgg_error(_damaged_copy(new_folder('corrupt-pb'), small_vgg,
                                  lambda vgg: _truncate(os.path.join(vgg, 'saved_model.pb'), 100)),
                    'saved_model.pb is damaged')
    _load_vgg_error(_damaged_copy(new_folder('no-variables'), small_vgg,
                                  lambda vgg: shutil.rmtree(os.path.join(vgg, 'variables'))),
                    'variables are missing or damaged')
    _load_vgg_error(_damaged_copy(new_folder('truncated'), small_vgg,
                                  lambda vgg: _truncate(os.path.join(vgg, data), 1000)),
                    'variables are missing or damaged')


def test_main_py_reports_a_damaged_vgg_in_one_line(new_folder, small_vgg, quick_train_args):
    vgg = _damaged_copy(new_folder('cli-corrupt'), small_vgg,
                        lambda vgg: _truncate(os.path.join(vgg, 'saved_model.pb'), 100))
    runs = new_folder('cli-corrupt-runs')
    argv = quick_train_args(runs, 1)
    argv[argv.index('--vgg-dir') + 1] = vgg
    _, message = run_main(argv)
    assert message.startswith('main.py train: ') and 'saved_model.pb is damaged' in message, message
    assert os.listdir(runs) == [], 'a failed start leaves no run folder'


# --------------------------------------------------------------------------- the VGG builder

def test_random_vgg16_has_the_vgg16_structure_at_any_width():
    full = vgg_builder.vgg16_kernel_shapes()
    assert len(full) == 15 and full['block1_conv1'] == (3, 3, 3, 64) and full['block5_conv3'] == (3, 3, 512, 512)
    assert full['fc6'] == (7, 7, 512, 4096) and full['fc7'] == (1, 1, 4096, 4096)
    small = vgg_builder.vgg16_kernel_shapes(0.25)
    assert small['block3_conv3'] == (3, 3, 64, 64) and small['fc7'] == (1, 1, 1024, 1024)
    weights = vgg_builder.random_vgg16_weights(0.25, seed=4)
    again = vgg_builder.random_vgg16_weights(0.25, seed=4)
    assert all(np.array_equal(weights[n][0], again[n][0]) for n in weights), 'same seed, same weights'
    fan_in = 3 * 3 * 64
    assert abs(weights['block3_conv3'][0].std() - np.sqrt(2 / fan_in)) < 0.01
    with pytest.raises(ValueError, match='width'):
        vgg_builder.vgg16_kernel_shapes(0)


def test_write_vgg16_savedmodel_refuses_to_overwrite(small_vgg):
    target = small_vgg
    with pytest.raises(FileExistsError, match=re.escape(target)):
        vgg_builder.write_random_vgg16(target, SMALL_WIDTH)
    leftovers = [name for name in os.listdir(os.path.dirname(target)) if name != 'vgg']
    assert leftovers == [], leftovers


def test_group_norm_gives_each_group_of_each_image_zero_mean_and_unit_variance():
    values = np.random.default_rng(6).normal(3.0, 2.0, (2, 5, 7, 16)).astype(np.float32)
    values[1] *= 10  # the second image on another scale: its statistics are its own
    with tf.Graph().as_default(), tf.Session() as sess:
        x = tf.placeholder(tf.float32, [None, None, None, 16])
        with tf.variable_scope('layer'):
            normalised = vgg_builder._group_norm(x, 4)
        sess.run(tf.global_variables_initializer())
        out = sess.run(normalised, {x: values}).reshape(2, 5, 7, 4, 4)
    np.testing.assert_allclose(out.mean(axis=(1, 2, 4)), 0, atol=1e-4)
    np.testing.assert_allclose(out.var(axis=(1, 2, 4)), 1, rtol=1e-3)
    assert not np.allclose(out.mean(axis=(1, 2)), 0, atol=1e-2), 'per group, not per channel'


def _encoder_outputs(vgg_path, images):
    """layer3_out and layer7_out of the SavedModel at vgg_path, loaded from disk by load_vgg, for each image."""
    with tf.Graph().as_default(), tf.Session() as sess:
        image_input, _, layer3, _, layer7 = main.load_vgg(sess, vgg_path)
        names = {v.op.name for v in tf.global_variables()}
        return names, [sess.run([layer3, layer7], {image_input: image[None]}) for image in images]


def test_group_norm_encoder_keeps_the_contract_and_normalises_every_layer(tmp_path, capsys):
    normalised = vgg_builder.write_random_vgg16(str(tmp_path / 'gn'), SMALL_WIDTH, seed=2, norm_groups=8)
    plain = vgg_builder.write_random_vgg16(str(tmp_path / 'plain'), SMALL_WIDTH, seed=2)
    # The same scene at two contrasts around the ImageNet mean: what the encoder sees after mean subtraction
    # differs by a factor of 3 only.
    mean_rgb = np.array(vgg_builder.IMAGENET_BGR_MEAN[::-1], np.float32)
    scene = np.random.default_rng(5).uniform(-40, 40, (64, 96, 3)).astype(np.float32)
    images = [mean_rgb + scene, mean_rgb + 3 * scene]
    names, ((low3, low7), (high3, high7)) = _encoder_outputs(normalised, images)
    layers = vgg_builder.vgg16_kernel_shapes()
    assert names == {'%s/%s' % (layer, part) for layer in layers for part in ('kernel', 'bias', 'gamma', 'beta')}
    # Normalised after every convolution: the contrast is gone by pool3 and by fc7.
    np.testing.assert_allclose(high3, low3, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(high7, low7, rtol=1e-3, atol=1e-4)
    assert low7.std() > 0.1, 'fc7 is not dead'
    names, ((low3, low7), (high3, high7)) = _encoder_outputs(plain, images)
    # Without it (zero biases, ReLU) every layer is linear in the contrast.
    assert not any(name.endswith(('gamma', 'beta')) for name in names)
    np.testing.assert_allclose(high7, 3 * low7, rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match='do not split into 3 groups'):
        vgg_builder.write_random_vgg16(str(tmp_path / 'odd'), SMALL_WIDTH, norm_groups=3)
    with pytest.raises(SystemExit):
        vgg_builder.main(['random', str(tmp_path / 'odd'), '--width', str(SMALL_WIDTH), '--group-norm', '-1'])
    assert capsys.readouterr().err == 'vgg_builder.py: the number of normalisation groups must be >= 0 (0: none), ' \
                                      'got -1\n'
    assert not os.path.exists(tmp_path / 'odd')


# --------------------------------------------------------------------------- build_fcn8 and training options

def _vgg_weights(sess):
    return {v.op.name: sess.run(v) for v in tf.global_variables() if v.op.name.split('/')[0] in
            vgg_builder.vgg16_kernel_shapes() and 'Adam' not in v.op.name}


def test_build_fcn8_keeps_the_pretrained_vgg_weights_bit_for_bit(small_vgg):
    with tf.Graph().as_default(), tf.Session() as sess:
        model.load_vgg(sess, small_vgg)
        loaded = _vgg_weights(sess)
    with tf.Graph().as_default(), tf.Session() as sess:
        model.build_fcn8(sess, small_vgg, 2)
        built = _vgg_weights(sess)
    assert len(loaded) == 30 and loaded.keys() == built.keys()
    assert all(np.array_equal(loaded[name], built[name]) for name in loaded), 'the VGG weights were re-initialised'


def _one_training_step(sess, fcn8, data_road):
    pairs = datasets.kitti_road_pairs(os.path.join(data_road, 'training'))
    images, labels = next(batches.TrainingBatches(pairs[:2], SMALL_SHAPE)(2))
    _, loss = sess.run([fcn8.train_op, fcn8.loss], {fcn8.image_input: images, fcn8.correct_label: labels,
                                                    fcn8.learning_rate: 1e-3})
    return loss


def test_freeze_encoder_trains_only_the_decoder_fc6_and_fc7_included(small_vgg, small_dataset):
    with tf.Graph().as_default(), tf.Session() as sess:
        fcn8 = model.build_fcn8(sess, small_vgg, 2, freeze_encoder=True)
        encoder = [v for v in tf.trainable_variables() if v.op.name.split('/')[0] in vgg_builder.vgg16_kernel_shapes()]
        decoder = [v for v in tf.trainable_variables() if v.name.startswith('fcn8')]
        assert {v.op.name.split('/')[0] for v in encoder} >= {'fc6', 'fc7', 'block1_conv1'}
        before = sess.run(encoder + decoder)
        assert np.isfinite(_one_training_step(sess, fcn8, small_dataset))
        after = sess.run(encoder + decoder)
        adam_slots = [v.op.name for v in tf.global_variables() if 'Adam' in v.op.name]
    assert all(np.array_equal(a, b) for a, b in zip(before[:len(encoder)], after[:len(encoder)]))
    assert all(not np.array_equal(a, b) for a, b in zip(before[len(encoder):], after[len(encoder):]))
    assert adam_slots and not [name for name in adam_slots if not name.startswith('fcn8')], 'no Adam state for VGG'


def _partition_graph_facts(sess, fcn8, data_road):
    """(op types, dtypes) of the graph TensorFlow actually ran for one training step, after its rewrites."""
    pairs = datasets.kitti_road_pairs(os.path.join(data_road, 'training'))
    images, labels = next(batches.TrainingBatches(pairs[:1], SMALL_SHAPE)(1))
    metadata = tf.RunMetadata()
    sess.run(fcn8.train_op, {fcn8.image_input: images, fcn8.correct_label: labels, fcn8.learning_rate: 1e-3},
             options=tf.RunOptions(output_partition_graphs=True), run_metadata=metadata)
    nodes = [node for graph in metadata.partition_graphs for node in graph.node]
    return {node.op for node in nodes}, {node.attr['T'].type for node in nodes if 'T' in node.attr}


def _cpu_flags():
    with open('/proc/cpuinfo') as f:
        return next((line.split(':', 1)[1].split() for line in f if line.startswith('flags')), [])


def test_mixed_precision_computes_in_bfloat16_on_this_cpu_with_float32_weights(small_vgg, small_dataset):
    if 'avx512f' not in _cpu_flags():
        pytest.skip("this CPU has no AVX-512, which oneDNN's bfloat16 needs: TensorFlow keeps the graph in float32")
    with tf.Graph().as_default(), tf.Session(config=fit.session_config(mixed_precision=True)) as sess:
        fcn8 = model.build_fcn8(sess, small_vgg, 2, mixed_precision=True)
        _, dtypes = _partition_graph_facts(sess, fcn8, small_dataset)
        variables = [v for v in tf.global_variables() if v.name.startswith(('fcn8', 'block1'))]
        assert variables and all(v.dtype.base_dtype == tf.float32 for v in variables), 'float32 master weights'
    with tf.Graph().as_default(), tf.Session(config=fit.session_config()) as sess:
        _, plain_dtypes = _partition_graph_facts(sess, model.build_fcn8(sess, small_vgg, 2), small_dataset)
    assert tf.bfloat16.as_datatype_enum in dtypes and tf.bfloat16.as_datatype_enum not in plain_dtypes


def _adam_step_size(clip_norm, adam_epsilon=config.ADAM_EPSILON):
    """How far one Adam step at learning rate 0.1 moves logits whose loss gradient is large."""
    with tf.Graph().as_default(), tf.Session() as sess:
        scores = tf.Variable(np.full((1, 4, 4, 2), [5.0, -5.0], np.float32))
        labels = np.zeros((1, 4, 4, 2), np.float32)
        labels[..., 1] = 1
        correct_label = tf.placeholder(tf.float32, [None, None, None, 2])
        rate = tf.placeholder(tf.float32, [])
        _, train_op, _ = model.optimize(scores, correct_label, rate, 2, clip_norm=clip_norm,
                                        adam_epsilon=adam_epsilon)
        sess.run(tf.global_variables_initializer())
        before = sess.run(scores)
        sess.run(train_op, {correct_label: labels, rate: 0.1})
        return np.abs(sess.run(scores) - before).max()


def test_clip_norm_clips_the_gradients_adam_receives():
    # Adam's step is ~learning rate whatever the gradient's scale, until the gradient nears its epsilon (1e-8):
    # a gradient clipped to a norm of 1e-12 barely moves the weights; unclipped or clipped to 1, the step is 0.1.
    assert abs(_adam_step_size(None) - 0.1) < 1e-3
    assert abs(_adam_step_size(1.0) - 0.1) < 1e-3
    assert _adam_step_size(1e-12) < 1e-2


def test_adam_epsilon_turns_steps_on_small_gradients_into_plain_sgd_steps():
    # Gradients of norm 1e-3 and 1e-2: at epsilon 1e-8 Adam steps by the rate for both; at epsilon 1e-3 the step
    # is a small fraction of the rate and grows with the gradient, as an SGD step does.
    assert abs(_adam_step_size(1e-3) - 0.1) < 1e-3 and abs(_adam_step_size(1e-2) - 0.1) < 1e-3
    small, ten_times = _adam_step_size(1e-3, adam_epsilon=1e-3), _adam_step_size(1e-2, adam_epsilon=1e-3)
    assert small < 1e-3 and 9 < ten_times / small < 10.5, (small, ten_times)


def _loss_of_a_road_pixel(road_margin, label_smoothing):
    """optimize's loss for a road pixel whose road logit leads by `road_margin`, beside a don't-care pixel
    whose logits are wildly wrong (it must add nothing)."""
    with tf.Graph().as_default(), tf.Session() as sess:
        scores = tf.constant([[[[0.0, road_margin], [50.0, -50.0]]]])
        labels = np.array([[[[0, 1], [0, 0]]]], np.float32)
        correct_label = tf.placeholder(tf.float32, [None, None, None, 2])
        _, _, loss = model.optimize(tf.Variable(scores), correct_label, 0.1, 2, label_smoothing=label_smoothing)
        sess.run(tf.global_variables_initializer())
        return sess.run(loss, {correct_label: labels})


def test_label_smoothing_puts_the_lowest_loss_at_finite_logits():
    # Targets 0.95/0.05 for smoothing 0.1: the cross-entropy is lowest at a margin of log(0.95/0.05), and a
    # larger margin costs more; without smoothing every larger margin costs less.
    best_margin = np.log(0.95 / 0.05)
    expected = -(0.95 * np.log(0.95) + 0.05 * np.log(0.05))
    assert abs(_loss_of_a_road_pixel(best_margin, 0.1) - expected) < 1e-5
    assert _loss_of_a_road_pixel(20.0, 0.1) > _loss_of_a_road_pixel(best_margin, 0.1) + 0.5
    assert _loss_of_a_road_pixel(20.0, 0.0) < _loss_of_a_road_pixel(best_margin, 0.0)


def _hard_scores_and_labels(seed):
    """Three 6x7 images of three classes: scores saying a random class with certainty, random labels, a fifth of
    the pixels don't-care."""
    rng = np.random.RandomState(seed)
    predicted, truth = rng.randint(0, 3, (3, 6, 7)), rng.randint(0, 3, (3, 6, 7))
    cared = rng.rand(3, 6, 7) > 0.2
    return predicted, truth, cared, 50.0 * np.eye(3)[predicted], np.eye(3)[truth] * cared[..., None]


def test_lovasz_softmax_is_one_minus_the_iou_of_certain_predictions():
    # On 0/1 errors the Lovasz extension is the Jaccard loss itself: the mean over images and the classes present
    # in each of 1 - IoU, counted with numpy over the cared-for pixels.
    predicted, truth, cared, scores, labels = _hard_scores_and_labels(0)
    with tf.Graph().as_default(), tf.Session() as sess:
        loss = sess.run(model.lovasz_softmax(tf.constant(scores, tf.float32), tf.constant(labels, tf.float32)))
    expected = []
    for image in range(3):
        for cls in range(3):
            true, said = (truth[image] == cls) & cared[image], (predicted[image] == cls) & cared[image]
            if true.any():
                expected.append(1 - (true & said).sum() / (true | said).sum())
    assert abs(loss - np.mean(expected)) < 1e-6, (loss, np.mean(expected))


def _optimize_free_logits(labels, lovasz_weight, steps):
    """optimize's loss on free logits (random, seed 2) after `steps` Adam steps, and its Lovasz-softmax part."""
    with tf.Graph().as_default(), tf.Session() as sess:
        scores = tf.Variable(np.random.RandomState(2).normal(size=labels.shape).astype(np.float32))
        correct_label = tf.placeholder(tf.float32, [None, None, None, labels.shape[-1]])
        _, train_op, loss = model.optimize(scores, correct_label, 0.05, labels.shape[-1], lovasz_weight=lovasz_weight)
        lovasz = model.lovasz_softmax(scores, correct_label)
        sess.run(tf.global_variables_initializer())
        for _ in range(steps):
            sess.run(train_op, {correct_label: labels})
        return sess.run([loss, lovasz], {correct_label: labels})


def test_lovasz_weight_adds_the_lovasz_loss_and_training_lowers_it():
    labels = _hard_scores_and_labels(1)[-1]
    (with_lovasz, lovasz), (without, _) = _optimize_free_logits(labels, 2.0, 0), _optimize_free_logits(labels, 0, 0)
    assert abs(with_lovasz - without - 2 * lovasz) < 1e-5 and lovasz > 0.3
    trained_loss, trained_lovasz = _optimize_free_logits(labels, 2.0, 30)
    assert trained_loss < with_lovasz - 0.5 and trained_lovasz < lovasz / 2, (trained_lovasz, lovasz)
