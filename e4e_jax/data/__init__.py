"""Input pipelines: a plain image-folder reader for inference (no TensorFlow) and the training data."""
