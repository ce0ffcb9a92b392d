"""Simulation side: LIBERO suites, the gymnasium env, ground truth and scripted experts.

Never imports torch or transformers (LIBERO's own modules do; ours do not).
"""

import os

# Headless by default: EGL off-screen rendering (set MUJOCO_GL=osmesa for CPU-only OpenGL).
os.environ.setdefault("MUJOCO_GL", "egl")
if os.environ["MUJOCO_GL"] in ("egl", "osmesa"):
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])


class UnsupportedTask(NotImplementedError):
    """The scripted expert has no strategy for this task (a LIBERO goal predicate, a RoboCasa task)."""
