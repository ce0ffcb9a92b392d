"""RoboCasa's interpreter (`.venv-robocasa`, made by install.sh): robosuite 1.5 for RoboCasa cannot
share a venv with LIBERO's robosuite 1.4, so RoboCasa's env workers will run under a second
interpreter. Its `robosuite` module must be praxis-robosuite's: PyPI's robosuite 1.5.2 (which
rlinf-robocasa365 asks for) fails inside the kitchen with `load_model_on_init`."""

import subprocess
from pathlib import Path

ROBOCASA_PYTHON = Path(__file__).resolve().parents[1] / ".venv-robocasa" / "bin" / "python"
TASKS = ("TurnOffMicrowave", "StartCoffeeMachine", "PickPlaceCabinetToCounter")  # the XVR paper's three

BUILD = """
import sys, robosuite, robocasa
print("robosuite", robosuite.__version__)
for name in sys.argv[1:]:
    env = robosuite.make(name, robots="PandaOmron", has_renderer=False, has_offscreen_renderer=False,
                         use_camera_obs=False)
    print("built", name, type(env).__name__)
"""


def test_robocasa_interpreter_builds_the_three_kitchen_tasks(tmp_path):
    assert ROBOCASA_PYTHON.exists(), f"{ROBOCASA_PYTHON} is missing: run ./install.sh"
    r = subprocess.run([str(ROBOCASA_PYTHON), "-c", BUILD, *TASKS], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert "robosuite 1.5.2" in lines
    for name in TASKS:
        assert f"built {name} {name}" in lines, r.stdout
