"""Keeping TensorFlow's and LiteRT's C++ log lines off the user's terminal.

They write straight to file descriptor 2, past Python: absl's "All log messages before
absl::InitializeLog()", CUDA probing ("failed call to cuInit") on every CPU-only
machine, "Created TensorFlow Lite XNNPACK delegate", the int8 converter's settings.
Users read them as errors. They come from a few known calls, so only those run with
descriptor 2 pointed at /dev/null; RETRAIN_NATIVE_LOGS=1 shows them again.
"""

from __future__ import annotations

import contextlib
import os
import sys


@contextlib.contextmanager
def native_logs_silenced():
    if os.environ.get("RETRAIN_NATIVE_LOGS"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def import_tensorflow():
    """Import TensorFlow and probe its devices (where the CUDA lines come from) quietly."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with native_logs_silenced():
        import tensorflow as tf

        tf.config.list_physical_devices()
    return tf
