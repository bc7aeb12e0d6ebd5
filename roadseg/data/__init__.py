"""Datasets on disk, their labels and splits, decoded images, training batches, generated roads, downloads."""
