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


# A close shorter than this is a flicker, not a grasp (the experts hold a grasp >= 8 steps).
GRASP_MIN_CLOSED_STEPS = 5


class GraspCounter:
    """How many grasp-release cycles the robot has completed this episode, counted from its own
    gripper commands (+1 close, -1 open): a cycle is a close held >= GRASP_MIN_CLOSED_STEPS then
    an open. A progress signal any robot knows, with no scene knowledge: a two-goal LIBERO-10
    task is one cycle per goal, and a policy shown the count knows which half it is in."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.count, self._closed_for = 0, 0

    def update(self, gripper_command: float) -> int:
        if gripper_command > 0:
            self._closed_for += 1
        else:
            self.count += self._closed_for >= GRASP_MIN_CLOSED_STEPS
            self._closed_for = 0
        return self.count


def grasps_before_each_step(gripper_commands) -> np.ndarray:
    """An episode's commands -> int[T]: the cycles completed before step t (what the robot knew
    when it chose command t), as a GraspCounter running beside the episode reports them."""
    counter, out = GraspCounter(), []
    for g in np.asarray(gripper_commands, np.float64).reshape(-1):
        out.append(counter.count)
        counter.update(g)
    return np.asarray(out, np.int64)
