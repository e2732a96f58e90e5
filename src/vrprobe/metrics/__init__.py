"""Metrics computed from recorded numbers; nothing here runs a model."""
