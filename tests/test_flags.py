"""Every training flag reaches training: each is checked by what it does to the run, not by run.json."""
import os

import numpy as np
import pytest

from roadseg.process import graph_mode_tf
from roadseg.training import run_folder
from tests.helpers import only_run, run_main

tf = graph_mode_tf()


@pytest.fixture(scope='module')
def trained_with(tmp_path_factory, quick_train_args):
    """trained_with(*extra): the RunFolder of a one-epoch quick run with `extra` flags (the same flags give the
    same run, so it is made once)."""
    runs_by_flags = {}

    def train(*extra):
        if extra not in runs_by_flags:
            runs = str(tmp_path_factory.mktemp('flags'))
            out, stop = run_main(quick_train_args(runs, 1, *extra))
            assert stop is None, stop
            runs_by_flags[extra] = run_folder.RunFolder(only_run(runs))
        return runs_by_flags[extra]
    return train


def _values(prefix):
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(prefix)}


def _last(run):
    return _values(run.checkpoint('last')[0])


def _first_epoch_loss(run):
    return run.read_metrics()[0]['train_loss']


def test_seed_makes_a_run_repeatable_and_another_seed_a_different_run(trained_with):
    first, again, other = (trained_with('--seed', '3'), trained_with('--seed', '3', '--keep-prob', '1'),
                           trained_with('--seed', '4'))
    a, b, c = _last(first), _last(again), _last(other)
    assert all(np.array_equal(a[name], b[name]) for name in a)
    assert not np.array_equal(a['fcn8/score_layer7/kernel'], c['fcn8/score_layer7/kernel'])


def test_augment_changes_what_the_network_sees(trained_with):
    plain, augmented = trained_with(), trained_with('--augment')
    assert _first_epoch_loss(plain) != _first_epoch_loss(augmented)


def test_freeze_encoder_leaves_every_vgg_weight_as_loaded(trained_with, small_vgg):
    vgg = _values(os.path.join(small_vgg, 'variables', 'variables'))
    frozen, trained = _last(trained_with('--freeze-encoder')), _last(trained_with())
    encoder = [name for name in vgg if name.split('/')[0] in ('block1_conv1', 'block5_conv3', 'fc6', 'fc7')]
    assert len(encoder) == 8
    assert all(np.array_equal(frozen[name], vgg[name]) for name in encoder)
    assert not any(np.array_equal(trained[name], vgg[name]) for name in encoder if name.endswith('kernel'))


def test_mixed_precision_trains_with_loss_scaling(trained_with):
    scaled = _last(trained_with('--mixed-precision'))
    assert any('loss_scale' in name for name in scaled), sorted(scaled)[:20]
    assert not any('loss_scale' in name for name in _last(trained_with()))


def test_skip_scales_are_the_factors_in_the_exported_graph(trained_with):
    run = trained_with('--skip-scales', '0.5', '0.25')
    graph = tf.Graph()
    with graph.as_default(), tf.Session(graph=graph) as sess:
        tf.saved_model.loader.load(sess, ['serve'], os.path.join(run.path, 'export'))
        factors = set()
        for op in graph.get_operations():
            if op.type == 'Mul' and op.name.startswith('fcn8'):
                for tensor in op.inputs:
                    if tensor.op.type == 'Const' and tensor.shape.num_elements() == 1:
                        factors.add(float(sess.run(tensor)))
    assert {0.5, 0.25} <= factors, factors
