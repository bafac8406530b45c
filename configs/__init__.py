"""Configurations (ml_collections). `default.py` lists every key; the others override a few."""
