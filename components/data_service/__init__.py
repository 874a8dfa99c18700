"""The tf.data service's processes: a dispatcher and CPU-only dataset workers (`recap data-service`)."""
