"""transformer_tf: train encoder-decoder Transformers from YAML configs (Keras 3, TensorFlow).

Importing the package registers every built-in layer and model with Keras, so ``.keras`` files
saved by it reload with ``keras.saving.load_model`` and no ``custom_objects``.
"""

from transformer_tf import layers, models
from transformer_tf.registry import register

__version__ = "0.1.0"

__all__ = ["layers", "models", "register", "__version__"]
