"""A reused env gives the scene a new env gives: fresh layouts after fresh layouts and after init
states, init states after fresh layouts (physics only; every body of the scene within 1 mm).

LIBERO places the objects that start on or in a fixture relative to the fixture's pose as the
model holds it before the reset; a soft reset used to keep the last episode's, and those bowls
landed 29-44 cm off, in mid-air (LIBERO-Spatial tasks 4, 6, 7, 9). The default set checks those
tasks and one fixture-heavy task of every other suite; `-m slow` checks all 130 LIBERO tasks."""

import numpy as np
import pytest

from envs.libero_env import LiberoEnv
from envs.suites import get_suite

SEED_A, SEED_B = 101, 202  # two fresh layouts, apart from the init states' own seeds (0..49)


def _bodies(env: LiberoEnv) -> np.ndarray:
    return np.array(env.sim.data._data.xpos)


def _worst_body(env: LiberoEnv, reference: np.ndarray) -> str:
    off = np.linalg.norm(_bodies(env) - reference, axis=1)
    name = env.sim.model._model.body(int(off.argmax())).name
    return f"{name} {100 * off.max():.1f} cm off"


def check_task(suite: str, task: int) -> None:
    new = LiberoEnv(suite, task, camera_obs=False)
    new.reset(seed=SEED_A)
    fresh_a = _bodies(new)
    new.close()
    new = LiberoEnv(suite, task, camera_obs=False)
    new.reset(init_state_index=0)
    init_0 = _bodies(new)

    # the same env (reused: soft resets), in every order an episode sequence may take
    new.reset(seed=SEED_A)  # a fresh layout after an init state
    assert np.abs(_bodies(new) - fresh_a).max() < 1e-3, f"{suite} {task}, fresh after init: {_worst_body(new, fresh_a)}"
    new.reset(seed=SEED_B)
    new.reset(seed=SEED_A)  # a fresh layout after another fresh layout
    assert np.abs(_bodies(new) - fresh_a).max() < 1e-3, f"{suite} {task}, fresh after fresh: {_worst_body(new, fresh_a)}"
    new.reset(init_state_index=0)  # an init state after fresh layouts
    assert np.abs(_bodies(new) - init_0).max() < 1e-3, f"{suite} {task}, init after fresh: {_worst_body(new, init_0)}"
    new.close()


# LIBERO-Spatial 4, 6, 7, 9: bowls in the drawer, on the stove, on the cabinet (the measured
# failures); then a task per suite with objects on or in fixtures
DEFAULT_TASKS = [("libero_spatial", 4), ("libero_spatial", 6), ("libero_spatial", 7), ("libero_spatial", 9),
                 ("libero_spatial", 0), ("libero_goal", 8), ("libero_10", 3), ("libero_object", 0),
                 ("libero_90", 20)]


@pytest.mark.parametrize("suite,task", DEFAULT_TASKS)
def test_reused_env_gives_the_new_envs_scene(suite, task):
    check_task(suite, task)


@pytest.mark.slow
@pytest.mark.parametrize("suite", ["libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90"])
def test_reused_env_gives_the_new_envs_scene_every_task(suite):
    failures = []
    for task in range(len(get_suite(suite).tasks)):
        try:
            check_task(suite, task)
        except AssertionError as e:
            failures.append(str(e).splitlines()[0])
    assert not failures, "\n".join(failures)


def test_seed_outside_numpys_range_is_refused():
    env = LiberoEnv("libero_spatial", 0, camera_obs=False)
    for bad in (2**32, -1, 1.5):
        with pytest.raises(ValueError, match="seed must be an int in 0..2\\*\\*32-1"):
            env.reset(seed=bad)
    env.close()
