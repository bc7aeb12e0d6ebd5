"""A trained model at work: the exported SavedModel, predictions over image files and videos, ONNX."""
