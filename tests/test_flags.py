"""Every training flag reaches training: each is checked by what it does to the run, not by run.json."""
import functools
import os

import numpy as np

from tests.fixtures import only_run, run_main, scratch_dir, small_vgg, train_args

from roadseg.training import run_folder  # noqa: E402
from roadseg.process import graph_mode_tf  # noqa: E402

tf = graph_mode_tf()


@functools.lru_cache(maxsize=None)
def _train(*extra, epochs=1):
    """A one-epoch quick run with `extra` flags (the same flags give the same run, so it is made once)."""
    runs = scratch_dir('flags')
    out, stop = run_main(train_args(runs, epochs, *extra))
    assert stop is None, stop
    return run_folder.RunFolder(only_run(runs))


def _values(prefix):
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(prefix)}


def _last(run):
    return _values(run.checkpoint('last')[0])


def _first_epoch_loss(run):
    return run.read_metrics()[0]['train_loss']


def test_seed_makes_a_run_repeatable_and_another_seed_a_different_run():
    first, again, other = _train('--seed', '3'), _train('--seed', '3', '--keep-prob', '1'), _train('--seed', '4')
    a, b, c = _last(first), _last(again), _last(other)
    assert all(np.array_equal(a[name], b[name]) for name in a)
    assert not np.array_equal(a['fcn8/score_layer7/kernel'], c['fcn8/score_layer7/kernel'])


def test_augment_changes_what_the_network_sees():
    plain, augmented = _train(), _train('--augment')
    assert _first_epoch_loss(plain) != _first_epoch_loss(augmented)


def test_freeze_encoder_leaves_every_vgg_weight_as_loaded():
    vgg = _values(os.path.join(small_vgg(), 'variables', 'variables'))
    frozen, trained = _last(_train('--freeze-encoder')), _last(_train())
    encoder = [name for name in vgg if name.split('/')[0] in ('block1_conv1', 'block5_conv3', 'fc6', 'fc7')]
    assert len(encoder) == 8
    assert all(np.array_equal(frozen[name], vgg[name]) for name in encoder)
    assert not any(np.array_equal(trained[name], vgg[name]) for name in encoder if name.endswith('kernel'))


def test_mixed_precision_trains_with_loss_scaling():
    scaled = _last(_train('--mixed-precision'))
    assert any('loss_scale' in name for name in scaled), sorted(scaled)[:20]
    assert not any('loss_scale' in name for name in _last(_train()))


def test_skip_scales_are_the_factors_in_the_exported_graph():
    run = _train('--skip-scales', '0.5', '0.25')
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
