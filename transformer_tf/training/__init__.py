"""Training: the loop on tf.distribute (:mod:`.trainer`), the update step (:mod:`.step`),
checkpoints, the optimizer and learning-rate schedules."""
