"""Evaluation metrics shared by every module: classification, calibration, thresholds.

Submodules are imported explicitly (``from toolkit.metrics.calibration import ece``) so that
``import toolkit`` stays light; nothing is imported here on purpose.
"""
