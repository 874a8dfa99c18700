"""Training: config, tf.data reader, Heavy Ranker model, loss, optimizer, loop, checkpoints."""
