"""The robot's proprioceptive state and action scale, numpy only: shared by the LIBERO env and the
ROS bridge (which runs on a robot computer without a simulator).

state = eef position (3) + eef axis-angle (3) + gripper joint positions (2), LeRobot's LIBERO layout.
An action's (dx, dy, dz) and (droll, dpitch, dyaw) in [-1, 1] are robosuite OSC_POSE deltas:
one unit is TRANSLATION_M_PER_UNIT metres and ROTATION_RAD_PER_UNIT radians per control step.
"""

from __future__ import annotations

import numpy as np

TRANSLATION_M_PER_UNIT = 0.05  # robosuite OSC_POSE output_max for position
ROTATION_RAD_PER_UNIT = 0.5    # and for orientation


def quat_xyzw_to_axis_angle(q) -> np.ndarray:
    """Axis-angle (axis * angle) of a unit quaternion (x, y, z, w), robosuite's convention."""
    q = np.asarray(q, dtype=np.float64)
    w = np.clip(q[3], -1.0, 1.0)
    s = np.sqrt(1.0 - w * w)
    if s < 1e-8:
        return np.zeros(3)
    return q[:3] * (2.0 * np.arccos(w)) / s


def robot_state(eef_pos, eef_quat_xyzw, gripper_qpos) -> np.ndarray:
    return np.concatenate([np.asarray(eef_pos, np.float64), quat_xyzw_to_axis_angle(eef_quat_xyzw),
                           np.asarray(gripper_qpos, np.float64)]).astype(np.float32)
