"""Stand-in assets for RoboCasa, for tests without the real kitchen assets (~1,100 files on no
registry this machine can reach). `write_standins(root)` writes into `root` a tree that
`ROBOCASA_ASSETS_PATH=root` points RoboCasa at: the wheel's own bundled assets (layouts, styles,
fixture registry, arena, procedural cabinets, handles and counters), box-only MJCF stand-ins for the
model-based fixtures of kitchen layout 1 / style 1 carrying the names RoboCasa's fixture classes
look up (the microwave's `microjoint` and start/stop buttons, the coffee machine's start button and
`receptacle_place_site`, the sink's handle and spout joints and `water` site, every fixture's
`reg_main` box), 1x1 textures, and one box object per (category, registry), so that sampling from
any object group works. The real task classes then build, reset, step and check success on them.

Runs under RoboCasa's interpreter (`.venv-robocasa/bin/python -m envs.robocasa_standins DIR`).
Real kitchens need the real assets: `.venv-robocasa/bin/robocasa-download-assets --assets-path DIR`
on a machine with a network, then `ROBOCASA_ASSETS_PATH=DIR`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

from .robocasa_env import STANDIN_MARKER


def png_1x1(path: Path, rgb=(170, 170, 170)) -> None:
    """A one-pixel PNG (no imaging library needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" + bytes(rgb))) + chunk(b"IEND", b""))


# MJCF stand-ins: every name below is one a RoboCasa fixture class looks up (it prefixes them with
# the fixture's name); regions (reg_*) are invisible, non-colliding boxes that give sizes and places.
REG = 'rgba="0 1 0 0" group="1" contype="0" conaffinity="0"'
COL = 'group="0" rgba="0.6 0.6 0.6 1"'

def wrap(inner, asset=""):
    return f"""<mujoco model="stub">
  <compiler angle="radian"/>
  <asset>{asset}</asset>
  <worldbody>
    <body>
      <body name="object">
{inner}
      </body>
    </body>
  </worldbody>
</mujoco>
"""

# generic appliance: solid box + reg_main (+ reg_int so get_int_sites has something)
GENERIC = wrap(f"""        <geom name="body_col" type="box" pos="0 0 0" size="0.3 0.3 0.3" {COL}/>
        <geom name="reg_main" type="box" pos="0 0 0" size="0.3 0.3 0.3" {REG}/>""")

# cabinet door panel / visual-mesh handle: needs texture "tex", material "mat" (-> {name}_mat), geom reg_main
PANEL = wrap(f"""        <geom name="panel_col" type="box" pos="0 0 0" size="0.5 0.5 0.5" material="mat" group="0"/>
        <geom name="reg_main" type="box" pos="0 0 0" size="0.5 0.5 0.5" {REG}/>""",
    asset='<texture name="tex" type="2d" file="tex.png"/><material name="mat" texture="tex"/>')

# cabinet handle (a visual-mesh handle: RoboCasa keeps reg_main's x/y half-sizes and scales z to the
# handle's length), so it must be handle-sized: a 1 m box here blocks the robot's spawn and the cabinet
HANDLE = wrap(f"""        <geom name="handle_col" type="box" pos="0 0 0" size="0.01 0.015 0.1" material="mat" group="0"/>
        <geom name="reg_main" type="box" pos="0 0 0" size="0.01 0.015 0.1" {REG}/>""",
    asset='<texture name="tex" type="2d" file="tex.png"/><material name="mat" texture="tex"/>')

# microwave: hollow box, hinged door (joint "microjoint"), start/stop buttons, reg_main, reg_tray
MICROWAVE = wrap(f"""        <geom name="bottom" type="box" pos="0 0 -0.165" size="0.3 0.2 0.01" {COL}/>
        <geom name="top" type="box" pos="0 0 0.165" size="0.3 0.2 0.01" {COL}/>
        <geom name="back" type="box" pos="0 0.19 0" size="0.3 0.01 0.175" {COL}/>
        <geom name="left" type="box" pos="-0.29 0 0" size="0.01 0.2 0.175" {COL}/>
        <geom name="panel" type="box" pos="0.225 0 0" size="0.075 0.2 0.175" {COL}/>
        <geom name="start_button" type="box" pos="0.225 -0.205 -0.05" size="0.03 0.008 0.02" rgba="0 0.8 0 1" group="0"/>
        <geom name="stop_button" type="box" pos="0.225 -0.205 -0.11" size="0.03 0.008 0.02" rgba="0.8 0 0 1" group="0"/>
        <body name="door" pos="-0.3 -0.2 0">
          <joint name="microjoint" type="hinge" axis="0 0 1" pos="0 0 0" range="-1.57 0" damping="2" frictionloss="0.5" limited="true"/>
          <geom name="door_panel" type="box" pos="0.15 -0.01 0" size="0.15 0.01 0.175" rgba="0.2 0.2 0.2 1" group="0"/>
          <geom name="door_handle_main" type="box" pos="0.27 -0.04 0" size="0.01 0.02 0.1" rgba="0.5 0.5 0.5 1" group="0"/>
        </body>
        <geom name="reg_main" type="box" pos="0 0 0" size="0.3 0.2 0.175" {REG}/>
        <geom name="reg_tray" type="box" pos="-0.075 0 -0.095" size="0.18 0.16 0.06" {REG}/>""")

# coffee machine: body at back, start_button geom, receptacle_place_site child of object body
COFFEE = wrap(f"""        <geom name="base" type="box" pos="0 0.02 -0.17" size="0.12 0.13 0.01" {COL}/>
        <geom name="tower" type="box" pos="0 0.11 0" size="0.12 0.04 0.18" {COL}/>
        <geom name="head" type="box" pos="0 0.02 0.14" size="0.12 0.08 0.04" {COL}/>
        <geom name="start_button" type="box" pos="0.08 -0.065 0.14" size="0.015 0.008 0.015" rgba="0 0.8 0 1" group="0"/>
        <site name="receptacle_place_site" pos="0 -0.01 -0.16" size="0.01" rgba="0 0 1 0"/>
        <site name="coffee_liquid" pos="0 -0.01 0.0" size="0.005 0.08" type="cylinder" rgba="0.3 0.15 0 0"/>
        <geom name="reg_main" type="box" pos="0 0 0" size="0.12 0.15 0.18" {REG}/>""")

# sink: basin region, handle with handle_joint/handle_temp_joint, spout with spout_joint + water site
SINK = wrap(f"""        <geom name="basin_bottom" type="box" pos="0 0 -0.2" size="0.35 0.22 0.01" {COL}/>
        <geom name="basin_back" type="box" pos="0 0.21 -0.1" size="0.35 0.01 0.1" {COL}/>
        <geom name="basin_front" type="box" pos="0 -0.21 -0.1" size="0.35 0.01 0.1" {COL}/>
        <geom name="basin_l" type="box" pos="-0.34 0 -0.1" size="0.01 0.22 0.1" {COL}/>
        <geom name="basin_r" type="box" pos="0.34 0 -0.1" size="0.01 0.22 0.1" {COL}/>
        <body name="handle" pos="0.15 0.26 0.02">
          <joint name="handle_joint" type="hinge" axis="1 0 0" range="0 3.14" damping="1" limited="true"/>
          <joint name="handle_temp_joint" type="hinge" axis="0 0 1" range="-1 1" damping="1" limited="true"/>
          <geom name="handle_geom" type="box" size="0.01 0.04 0.01" pos="0 -0.04 0" {COL}/>
        </body>
        <body name="spout" pos="0 0.26 0.02">
          <joint name="spout_joint" type="hinge" axis="0 0 1" range="-3.14 3.14" damping="1" limited="true"/>
          <geom name="spout_geom" type="box" size="0.015 0.1 0.015" pos="0 -0.1 0.1" {COL}/>
          <site name="water" type="cylinder" pos="0 -0.2 -0.05" size="0.01 0.15" rgba="0.5 0.7 1 0"/>
        </body>
        <geom name="reg_main" type="box" pos="0 0 -0.09" size="0.35 0.22 0.12" {REG}/>
        <geom name="reg_basin" type="box" pos="0 0 -0.15" size="0.3 0.18 0.05" {REG}/>""")

# object stub (objaverse/lightwheel registry): collision box + visual box + reg_bbox
def object_xml(half=(0.03, 0.03, 0.04)) -> str:
    size = " ".join(f"{h:.4f}" for h in half)
    return wrap(f"""        <geom name="col" type="box" pos="0 0 0" size="{size}" group="0" rgba="0.8 0.4 0.1 1"/>
        <geom name="vis" type="box" pos="0 0 0" size="{size}" group="1" contype="0" conaffinity="0" rgba="0.8 0.4 0.1 1"/>
        <geom name="reg_bbox" type="box" pos="0 0 0" size="{size}" {REG}/>""")


OBJECT = object_xml()
# RoboCasa scales each category's model (x0.6 to x2.5): a stand-in is sized to be 5.5 x 5.5 x 8 cm
# after that scale, graspable like the real ones (a x1.2 6 cm box outgrew the Panda's 7 cm open pads)
OBJECT_HALF = (0.0275, 0.0275, 0.04)

def _template(rel: str) -> str:
    for prefix, text in (("fixtures/microwaves/", MICROWAVE), ("fixtures/coffee_machines/", COFFEE),
                         ("fixtures/sinks/", SINK), ("fixtures/cabinets/cabinet_panels/", PANEL),
                         ("fixtures/handles/", HANDLE), ("objects/", OBJECT)):
        if rel.startswith(prefix):
            return text
    return GENERIC


def _write_model(root: Path, rel: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    text = _template(rel)
    path.write_text(text)
    if 'file="tex.png"' in text:
        png_1x1(path.parent / "tex.png")


def _object_categories() -> dict:
    """RoboCasa's raw object table (kitchen_objects.OBJ_CATEGORIES), loaded on its own: the
    registry built from it at import keeps no model folders, and importing it would scan the
    asset tree before the stand-ins exist."""
    import robocasa

    path = Path(robocasa.__file__).parent / "models" / "objects" / "kitchen_objects.py"
    spec = importlib.util.spec_from_file_location("_robocasa_object_table", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.OBJ_CATEGORIES


def _write_objects(root: Path, registries=("objaverse", "lightwheel")) -> int:
    """One box per (category, registry): a group is sampled category first, then registry by file
    count, so an empty category anywhere in a group makes the sampling weights 0/0. Named stub_*,
    never after a real model (some are excluded by name)."""
    count = 0
    for category, meta in _object_categories().items():
        for registry in registries:
            if registry not in meta:
                continue
            info = meta[registry] or {}
            for folder in info.get("model_folders", [f"{registry}/{category}"]):
                # auxiliary objects (a saucepan's lid) live one level below their base model
                auxiliary = info.get("is_auxiliary_obj", meta.get("is_auxiliary_obj", False))
                model = f"objects/{folder}/stub_{category}" + ("/aux" if auxiliary else "")
                scale = np.broadcast_to(np.asarray(info.get("scale", 1.0), float), (3,))
                text = object_xml(np.asarray(OBJECT_HALF) / scale)
                (root / model).mkdir(parents=True, exist_ok=True)
                for name in ("model.xml", "model_upright.xml"):
                    (root / model / name).write_text(text)
                count += 1
    return count


# what reset() opens for kitchen layout 1 / style 1, the same for the three tasks (found by
# resetting against an empty tree and filling in each missing file in turn)
FIXTURES = (
    "fixtures/sinks/Sink025/model.xml",
    "fixtures/stoves/Stove074/model.xml",
    "fixtures/fridges/Refrigerator051/model.xml",
    "fixtures/cabinets/cabinet_panels/CabinetDoorPanel047/model.xml",
    "fixtures/handles/CabinetHandle003/model.xml",
    "fixtures/microwaves/Microwave066/model.xml",
    "fixtures/dishwashers/Dishwasher042/model.xml",
    "fixtures/toasters/Toaster002/model.xml",
    "objects/lightwheel/knife_block/KnifeBlock008/model.xml",  # accessories placed as fixtures
    "objects/lightwheel/paper_towel_holder/PaperTowelHolder012/model.xml",
    "fixtures/coffee_machines/CoffeeMachine067/model.xml",
)
TEXTURES = (
    "textures/bricks/red_bricks.png", "textures/flat/light_gray.png", "textures/tiles/concrete_tiles.png",
    "textures/marble/marble.png", "textures/flat/gray.png", "textures/metals/bright_metal.png",
    "textures/wood/dark_wood_planks.png", "textures/ceramic.png",
)
LAYOUT, STYLE = 1, 1  # the kitchen the stand-ins furnish


def write_standins(root: str | os.PathLike) -> Path:
    """Write the stand-in tree into `root` (created if missing; existing files are overwritten)."""
    import robocasa

    root = Path(root).resolve()
    shutil.copytree(Path(robocasa.__file__).parent / "models" / "assets", root, dirs_exist_ok=True)
    for rel in FIXTURES:
        _write_model(root, rel)
    for rel in TEXTURES:
        png_1x1(root / rel)
    _write_objects(root)
    # RoboCasaEnv reads this: stand-ins furnish one kitchen, so episodes stay in it
    (root / STANDIN_MARKER).write_text(json.dumps({"layout": LAYOUT, "style": STYLE}))
    return root


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m envs.robocasa_standins DIR   (then ROBOCASA_ASSETS_PATH=DIR)")
    print(write_standins(sys.argv[1]))
