"""The training loop (loop) and the action stage (action); the spatial stage lives in vla.spatial.stage."""
