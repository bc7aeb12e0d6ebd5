"""TensorFlow 1.x graph mode (`tensorflow.compat.v1`), imported once for the whole project.

Every module takes `tf` from here, so eager execution is off before any graph is built,
whichever module is imported first.
"""
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import tensorflow.compat.v1 as tf  # noqa: E402

tf.disable_eager_execution()
tf.get_logger().setLevel('ERROR')
