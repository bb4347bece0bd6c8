"""Import TensorFlow the way the export route needs it, once, quietly.

The LSTM must be built with legacy Keras (``tf-keras``, selected by ``TF_USE_LEGACY_KERAS=1``):
its converter emits the fused ``UNIDIRECTIONAL_SEQUENCE_LSTM`` op with variable state tensors,
which is what lets one interpreter on the device serve many streams. Keras 3's stateful LSTM
does not convert to a usable model.
"""

from __future__ import annotations

import os
from types import ModuleType


def tensorflow() -> tuple[ModuleType, ModuleType]:
    """``(tensorflow, tf_keras)`` with legacy Keras selected and C++ logging quietened."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import tf_keras as keras

    tf.get_logger().setLevel("ERROR")
    return tf, keras
