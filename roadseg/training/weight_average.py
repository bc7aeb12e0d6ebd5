"""--average-weights (stochastic weight averaging, Izmailov et al. 2018): the run's model is the mean of its weights
at the end of each epoch from the first after the warm-up on, not the last epoch's weights. Trained from random
weights, the end-of-epoch weights swing (the dusk drive's held-out IoU by several points from one epoch to the
next); their mean generalises better than any one of them (docs/experiments.md).

The mean lives in variables of its own under config.WEIGHT_AVERAGE_SCOPE, saved in every checkpoint with the
training weights, so that a resumed run goes on averaging; validation swaps it into the network and back, and the
export reads it from the checkpoint in place of the training weights."""
import contextlib

from roadseg.config import WEIGHT_AVERAGE_SCOPE
from roadseg.process import graph_mode_tf

tf = graph_mode_tf()

# The state.json key of a checkpoint: how many epochs' weights its mean holds (0 or absent: none, the training
# weights are the model).
AVERAGED_EPOCHS = 'averaged_epochs'


def first_averaged_epoch(config):
    """The weights during the warm-up are far from any minimum: the mean starts after it."""
    return config.warmup_epochs + 1


class WeightAverage:
    """The running mean of `variables` (the trainable ones), the op that adds the current weights to it, and
    in_network(), which puts the mean into the network for a while."""

    def __init__(self, sess, variables):
        self.sess = sess
        with tf.variable_scope(WEIGHT_AVERAGE_SCOPE):
            self.count = tf.get_variable('count', [], tf.float32, tf.zeros_initializer(), trainable=False)
            self.means = [tf.get_variable(v.op.name, v.shape, v.dtype.base_dtype, tf.zeros_initializer(),
                                          trainable=False) for v in variables]
            # The training weights while the mean is in the network: local, so that no checkpoint holds them.
            held = [tf.get_variable('held/' + v.op.name, v.shape, v.dtype.base_dtype, tf.zeros_initializer(),
                                    trainable=False, collections=[tf.GraphKeys.LOCAL_VARIABLES]) for v in variables]
        share = 1.0 / (self.count + 1.0)
        added = [mean.assign_add((weights - mean) * share) for mean, weights in zip(self.means, variables)]
        with tf.control_dependencies(added):
            self.add_op = self.count.assign_add(1.0)
        hold = [keep.assign(weights) for keep, weights in zip(held, variables)]
        with tf.control_dependencies(hold):
            self.swap_in_op = tf.group(*[weights.assign(mean) for weights, mean in zip(variables, self.means)])
        self.swap_out_op = tf.group(*[weights.assign(keep) for weights, keep in zip(variables, held)])
        sess.run(tf.variables_initializer(self.means + held + [self.count]))

    def add_current_weights(self):
        """Take the network's weights now into the mean."""
        self.sess.run(self.add_op)

    def epochs_averaged(self):
        return int(self.sess.run(self.count))

    @contextlib.contextmanager
    def in_network(self):
        """The mean in the network's variables inside the block, the training weights back after it (also after
        an error or a Ctrl-C); with no epoch averaged yet, the training weights stay."""
        if not self.epochs_averaged():
            yield
            return
        self.sess.run(self.swap_in_op)
        try:
            yield
        finally:
            self.sess.run(self.swap_out_op)
