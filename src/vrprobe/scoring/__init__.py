"""Scoring a model on samples: prediction, confidence, correctness and attention sharpness per sample
(`evaluate`), the records every analysis builds on.
"""
