"""transformer_tf: train encoder-decoder Transformers from YAML configs (Keras 3, TensorFlow).

Importing the package registers every built-in layer and model with Keras, so ``.keras`` files
saved by it reload with ``keras.saving.load_model`` and no ``custom_objects``.
"""

import os

# TensorFlow's C++ start-up chatter (CUDA probes, oneDNN notices) is not for our users.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from transformer_tf import layers, models  # noqa: E402
from transformer_tf.registry import register  # noqa: E402

__version__ = "0.1.0"

__all__ = ["layers", "models", "register", "__version__"]
