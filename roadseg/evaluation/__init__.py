"""Measures: the KITTI road devkit's (MaxF, AP, IoU) and per-class IoU, and scoring a model on labelled images."""
