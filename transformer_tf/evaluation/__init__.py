"""Metrics and scorers, best-checkpoint selection, early stopping, evaluation of runs.

Import the submodules directly (for example ``transformer_tf.evaluation.scorers``): this package
module imports nothing so that importing it stays cheap.
"""
