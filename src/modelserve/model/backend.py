"""The one place that imports Keras: quiet, on the TensorFlow backend, only when needed."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType


def import_keras() -> ModuleType:
    """Import Keras on TensorFlow with TensorFlow's start-up chatter turned down."""
    # 3: TensorFlow and Keras releases disagree on a tf.data attribute and log it as an error.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    with _native_stderr_silenced():
        import keras

    return keras


@contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for a while; Python's own errors still surface.

    TensorFlow's C++ start-up lines (absl's "before InitializeLog", oneDNN notices) ignore
    TF_CPP_MIN_LOG_LEVEL and would reach users, and pushers as `remote:` lines, on every import.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def import_tensorflow() -> ModuleType:
    """Import TensorFlow quietly."""
    import_keras()
    import tensorflow

    return tensorflow
