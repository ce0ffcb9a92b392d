"""Spatial question answering generated from the simulator's 3D ground truth (spatial tuning)."""
