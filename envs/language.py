"""Instruction rewrites by rules and templates we own (no model at run time): the language axis of
the perturbed evaluation (envs.perturb) and the instruction augmentation of training.

Every rule has two disjoint word sets: "train" (training may use them) and "eval" (kept for
evaluation only), so a policy trained on rewrites is measured on forms it never saw. A rewrite
keeps the instruction's referents: nouns are replaced by paraphrases of the same object, never by
another object's name in the same suite.

Levels (cumulative in strength, each a fixed recipe):
  1 a polite or indirect wrapper ("could you ...")
  2 a wrapper and a distractor clause that asks nothing ("... before the guests arrive")
  3 the verbs replaced by synonyms
  4 the object names replaced by paraphrases
  5 verbs and nouns replaced, with a wrapper and a distractor clause
"""

from __future__ import annotations

import re

import numpy as np

SPLITS = ("train", "eval")
LEVELS = (1, 2, 3, 4, 5)

WRAPPERS = {
    "train": ["please {}", "{} please", "can you {}", "i need you to {}", "go ahead and {}"],
    "eval": ["could you {}", "would you kindly {}", "your task is to {}", "make sure to {}", "now {}"],
}
DISTRACTORS = {
    "train": ["{}, the table is a bit messy", "{} without knocking anything over", "{} and then stop",
              "{}, the robot is ready"],
    "eval": ["{} before the guests arrive", "{}, carefully and slowly", "{} while the kitchen is quiet",
             "{}, thanks a lot"],
}
# verb phrase -> synonyms per split (longest phrases first when matching)
VERBS = {
    "pick up": {"train": ["grab", "take", "lift"], "eval": ["grasp", "collect"]},
    "place": {"train": ["set", "put down"], "eval": ["leave", "rest"]},
    "put": {"train": ["place", "set"], "eval": ["move", "stick"]},
    "open": {"train": ["pull open"], "eval": ["slide open"]},
    "close": {"train": ["shut"], "eval": ["push closed"]},
    "turn on": {"train": ["switch on"], "eval": ["activate"]},
    "push": {"train": ["slide"], "eval": ["shove"]},
}
# object name -> paraphrases per split; none of them is another LIBERO object's name
NOUNS = {
    "black bowl": {"train": ["dark bowl"], "eval": ["black basin"]},
    "bowl": {"train": ["basin"], "eval": ["round bowl"]},
    "plate": {"train": ["flat plate"], "eval": ["dinner plate"]},
    "left plate": {"train": ["plate on the left"], "eval": ["leftmost plate"]},
    "right plate": {"train": ["plate on the right"], "eval": ["rightmost plate"]},
    "ramekin": {"train": ["small ramekin"], "eval": ["little ceramic cup"]},
    "cookie box": {"train": ["box of cookies"], "eval": ["biscuit box"]},
    "wooden cabinet": {"train": ["wood cabinet"], "eval": ["timber cabinet"]},
    "cabinet": {"train": ["cupboard"], "eval": ["chest of drawers"]},
    "stove": {"train": ["cooktop"], "eval": ["cooker"]},
    "basket": {"train": ["bin"], "eval": ["wicker basket"]},
    "alphabet soup": {"train": ["can of alphabet soup"], "eval": ["alphabet soup can"]},
    "cream cheese box": {"train": ["box of cream cheese"], "eval": ["cream cheese carton"]},
    "cream cheese": {"train": ["cream cheese pack"], "eval": ["tub of cream cheese"]},
    "salad dressing": {"train": ["bottle of salad dressing"], "eval": ["dressing bottle"]},
    "bbq sauce": {"train": ["barbecue sauce"], "eval": ["bottle of bbq sauce"]},
    "ketchup": {"train": ["ketchup bottle"], "eval": ["tomato ketchup"]},
    "tomato sauce": {"train": ["can of tomato sauce"], "eval": ["tomato sauce can"]},
    "butter": {"train": ["pack of butter"], "eval": ["butter box"]},
    "milk": {"train": ["milk carton"], "eval": ["carton of milk"]},
    "chocolate pudding": {"train": ["pudding"], "eval": ["chocolate dessert"]},
    "orange juice": {"train": ["juice carton"], "eval": ["carton of orange juice"]},
    "wine bottle": {"train": ["bottle of wine"], "eval": ["wine"]},
    "rack": {"train": ["wine rack"], "eval": ["bottle holder"]},
    "drawer": {"train": ["drawer compartment"], "eval": ["sliding drawer"]},
    "moka pot": {"train": ["coffee pot"], "eval": ["espresso maker"]},
    "moka pots": {"train": ["coffee pots"], "eval": ["espresso makers"]},
    "white mug": {"train": ["white cup"], "eval": ["plain white mug"]},
    "yellow and white mug": {"train": ["yellow and white cup"], "eval": ["two-tone mug"]},
    "book": {"train": ["notebook"], "eval": ["hardcover book"]},
    "caddy": {"train": ["organizer"], "eval": ["desk caddy"]},
    "microwave": {"train": ["microwave oven"], "eval": ["small oven"]},
}


def _replace(text: str, table: dict, split: str, rng: np.random.Generator) -> str:
    """Each phrase of `table` found in text (longest first, whole words) replaced by one of its
    `split` synonyms; a replaced span is not matched again."""
    pattern = re.compile(r"\b(" + "|".join(re.escape(k) for k in sorted(table, key=len, reverse=True)) + r")\b")
    return pattern.sub(lambda m: str(rng.choice(table[m.group(1)][split])), text)


def rewrite(instruction: str, level: int, split: str, rng: np.random.Generator) -> str:
    """The instruction rewritten at `level` with the `split` word set ("train" or "eval")."""
    if level not in LEVELS:
        raise ValueError(f"language level must be one of {LEVELS}, got {level!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    text = instruction.strip().lower()
    if level in (3, 5):
        text = _replace(text, VERBS, split, rng)
    if level in (4, 5):
        text = _replace(text, NOUNS, split, rng)
    if level in (2, 5):
        text = str(rng.choice(DISTRACTORS[split])).format(text)
    if level in (1, 2, 5):
        text = str(rng.choice(WRAPPERS[split])).format(text)
    return text


def vocabulary(split: str) -> list[str]:
    """Every word form a split's rewrites can produce (a checkpoint keeps their embedding rows)."""
    forms = [t.replace("{}", " ") for t in WRAPPERS[split] + DISTRACTORS[split]]
    return forms + [w for table in (VERBS, NOUNS) for entry in table.values() for w in entry[split]]


def training_instruction(instruction: str, probability: float, key) -> str:
    """The instruction a training sample shows: rewritten with the "train" words at a level drawn
    from 1-5 with `probability`, else as written; fixed per `key` (e.g. episode and frame), so a
    resumed run sees the same samples."""
    rng = np.random.default_rng(key)
    if probability <= 0 or rng.random() >= probability:
        return instruction
    return rewrite(instruction, int(rng.integers(1, 6)), "train", rng)
