"""The one place that imports Keras: quiet, on the TensorFlow backend, only when needed."""

from __future__ import annotations

import os
from types import ModuleType


def import_keras() -> ModuleType:
    """Import Keras on TensorFlow with TensorFlow's start-up chatter turned down."""
    # 3: TensorFlow and Keras releases disagree on a tf.data attribute and log it as an error.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    return keras


def import_tensorflow() -> ModuleType:
    """Import TensorFlow quietly."""
    import_keras()
    import tensorflow

    return tensorflow
