"""Suites: LIBERO's (tasks, instructions, BDDL files, init states, the evaluation protocol) and
RoboCasa's kitchen tasks (run under a second interpreter, `robocasa_python()`; nothing here imports
robocasa).

`import libero.libero` asks on stdin for a config file unless one exists, so `libero_root()`
writes it first (into $LIBERO_CONFIG_PATH, by default a folder beside the installed package)
and every import of libero in this package goes through it.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

# OpenVLA / openpi evaluation protocol: policy steps per episode after the wait steps.
MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}
NUM_WAIT_STEPS = 10
INIT_STATES_PER_TASK = 50
CONTROL_FREQ = 20
CAMERAS = ("agentview", "robot0_eye_in_hand")
# the cameras every LIBERO scene defines (read off the MuJoCo models)
LIBERO_CAMERAS = ("agentview", "robot0_eye_in_hand", "frontview", "birdview", "sideview", "galleryview", "robot0_robotview")
# RoboCasa suites: (task, its instruction; {object} stands for the episode's object). Horizons are
# those of RoboCasa's datasets (robocasa.utils.dataset_registry_utils.get_task_horizon)
ROBOCASA_SUITES = {"robocasa": (
    ("TurnOffMicrowave", "Press the stop button on the microwave.", 300),
    ("StartCoffeeMachine", "Press the button on the coffee machine to serve coffee.", 300),
    ("PickPlaceCabinetToCounter", "Pick the {object} from the cabinet and place it on the counter.", 450),
)}
ROBOCASA_CAMERAS = ("robot0_agentview_left", "robot0_agentview_right", "robot0_eye_in_hand")
ALL_CAMERAS = {"libero": LIBERO_CAMERAS, "robocasa": (*ROBOCASA_CAMERAS, "robot0_agentview_center", "robot0_frontview")}
REPO = Path(__file__).resolve().parents[1]


@functools.cache
def libero_root() -> Path:
    """Path of the installed `libero/libero` folder, after making sure its config file exists."""
    spec = importlib.util.find_spec("libero")
    if spec is None or spec.origin is None:
        raise RuntimeError("the `libero` package is not installed: run ./install.sh")
    root = Path(spec.origin).parent / "libero"
    if not (root / "assets").exists():
        raise RuntimeError(f"LIBERO assets are missing at {root / 'assets'}: run ./install.sh")
    # one config per installation (beside the package), so two virtual environments never race
    config_dir = Path(os.environ.setdefault("LIBERO_CONFIG_PATH", str(root.parent / "vla_libero_config")))
    paths = {
        "benchmark_root": str(root),
        "bddl_files": str(root / "bddl_files"),
        "init_states": str(root / "init_files"),
        "datasets": str(root.parent / "datasets"),
        "assets": str(root / "assets"),
    }
    config_file = config_dir / "config.yaml"
    if not config_file.exists() or yaml.safe_load(config_file.read_text()) != paths:
        config_dir.mkdir(parents=True, exist_ok=True)
        tmp = config_file.with_name(f"config.{os.getpid()}.tmp")
        tmp.write_text(yaml.safe_dump(paths))
        os.replace(tmp, config_file)  # readers in other processes never see half a file
    return root


@dataclass(frozen=True)
class Task:
    suite: str
    index: int
    name: str
    instruction: str
    bddl_file: Path | None  # LIBERO's goal file; None for RoboCasa
    max_steps: int | None = None  # the task's own horizon (RoboCasa); None: the suite's

    def says(self, instruction: str) -> bool:
        """Whether an episode's instruction is this task's (a RoboCasa instruction names its object)."""
        return fnmatch.fnmatchcase(instruction, self.instruction.replace("{object}", "*"))


@dataclass(frozen=True)
class Suite:
    name: str
    tasks: tuple[Task, ...]
    max_steps: int
    num_wait_steps: int = NUM_WAIT_STEPS
    init_states_per_task: int = INIT_STATES_PER_TASK
    control_freq: int = CONTROL_FREQ
    cameras: tuple[str, ...] = field(default=CAMERAS)
    simulator: str = "libero"  # or "robocasa": its envs run under robocasa_python()

    def task(self, index: int) -> Task:
        if not isinstance(index, (int, np.integer)) or not 0 <= index < len(self.tasks):
            raise ValueError(f"task index {index!r} is out of range for {self.name} (0..{len(self.tasks) - 1})")
        return self.tasks[int(index)]

    def check_cameras(self, cameras) -> None:
        unknown = [c for c in cameras if c not in ALL_CAMERAS[self.simulator]]
        if unknown:
            raise ValueError(f"unknown camera(s) {unknown}; {self.name}'s scenes have {sorted(ALL_CAMERAS[self.simulator])}")

    @property
    def python(self) -> str | None:
        """The interpreter its env workers run under; None: this one."""
        return robocasa_python() if self.simulator == "robocasa" else None

    def init_states(self, task_index: int) -> np.ndarray:
        """The fixed initial MuJoCo states of a task, float64 [50, state_dim]."""
        if self.simulator != "libero":
            raise ValueError(f"{self.name} has no init-state files: its episode k starts from a scene seeded by k")
        return _init_states(self.name, self.task(task_index).index)


def suite_names() -> list[str]:
    return [*MAX_STEPS, *ROBOCASA_SUITES]


@functools.cache
def get_suite(name: str) -> Suite:
    if name in ROBOCASA_SUITES:
        tasks = tuple(Task(name, i, t, text, None, steps) for i, (t, text, steps) in enumerate(ROBOCASA_SUITES[name]))
        return Suite(name=name, tasks=tasks, max_steps=max(t.max_steps for t in tasks), num_wait_steps=0,
                     cameras=ROBOCASA_CAMERAS, simulator="robocasa")
    if name not in MAX_STEPS:
        raise ValueError(f"unknown suite {name!r}; expected one of {suite_names()}")
    root = libero_root()
    from libero.libero.benchmark import get_benchmark

    bench = get_benchmark(name)()
    tasks = tuple(
        Task(name, i, t.name, t.language, root / "bddl_files" / t.problem_folder / t.bddl_file)
        for i, t in enumerate(bench.tasks)
    )
    return Suite(name=name, tasks=tasks, max_steps=MAX_STEPS[name])


@functools.cache
def _init_states(suite: str, task_index: int) -> np.ndarray:
    libero_root()
    from libero.libero.benchmark import get_benchmark

    states = np.asarray(get_benchmark(suite)().get_task_init_states(task_index), dtype=np.float64)
    states.flags.writeable = False
    return states


def robocasa_python() -> str:
    """The interpreter RoboCasa's env workers run under: install.sh's `.venv-robocasa`, or
    $VLA_ROBOCASA_PYTHON."""
    python = Path(os.environ.get("VLA_ROBOCASA_PYTHON", REPO / ".venv-robocasa" / "bin" / "python"))
    if not python.exists():
        raise ValueError(f"RoboCasa's interpreter {python} is missing: run ./install.sh (it makes .venv-robocasa), "
                         "or point VLA_ROBOCASA_PYTHON at a Python with robocasa and robosuite 1.5")
    return str(python)
