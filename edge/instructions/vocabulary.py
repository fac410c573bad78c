"""Words the instruction parser knows: labels with plurals and synonyms, numbers, places, times.

Deterministic and small on purpose: an installer can read it, `edge explain` shows what it did with a
phrasing, and the tests hold a table of phrasings. The detector's own labels come from the model
manifest; this file only adds the ways people name them.
"""

from __future__ import annotations

import re

SYNONYMS: dict[str, str] = {
    # people
    "people": "person", "persons": "person", "anyone": "person", "anybody": "person",
    "someone": "person", "somebody": "person", "man": "person", "men": "person", "woman": "person",
    "women": "person", "intruder": "person", "intruders": "person", "visitor": "person",
    "visitors": "person", "pedestrian": "person", "pedestrians": "person", "human": "person",
    "humans": "person", "child": "person", "children": "person", "kid": "person", "kids": "person",
    "worker": "person", "workers": "person", "guy": "person", "guys": "person", "who": "person",
    # vehicles
    "vehicle": "car", "vehicles": "car", "automobile": "car", "automobiles": "car",
    "lorry": "truck", "lorries": "truck", "bike": "bicycle", "bikes": "bicycle",
    "cyclist": "bicycle", "cyclists": "bicycle", "motorbike": "motorcycle",
    "motorbikes": "motorcycle", "scooter": "motorcycle", "scooters": "motorcycle",
    "plane": "airplane", "planes": "airplane", "ship": "boat", "ships": "boat",
    # things
    "phone": "cell phone", "phones": "cell phone", "mobile": "cell phone", "cellphone": "cell phone",
    "television": "tv", "monitor": "tv", "bag": "handbag", "bags": "handbag", "purse": "handbag",
    "sofa": "couch", "table": "dining table", "tables": "dining table", "plant": "potted plant",
    "plants": "potted plant", "ball": "sports ball", "glass": "wine glass", "glasses": "wine glass",
    "puppy": "dog", "puppies": "dog", "kitten": "cat", "kittens": "cat", "luggage": "suitcase",
    "fridge": "refrigerator", "laptops": "laptop", "computer": "laptop", "buses": "bus",
    "knives": "knife", "benches": "bench", "sandwiches": "sandwich", "couches": "couch",
    # safety
    "fires": "fire", "flame": "fire", "flames": "fire", "blaze": "fire", "burning": "fire",
    "smoking": "smoke", "fumes": "smoke",
}  # fmt: skip

NUMBERS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20,
    "thirty": 30, "forty": 40, "forty-five": 45, "fifty": 50, "sixty": 60, "ninety": 90, "couple": 2,
    "few": 3,
}  # fmt: skip

UNITS_S = {
    "second": 1, "seconds": 1, "sec": 1, "secs": 1, "s": 1,
    "minute": 60, "minutes": 60, "min": 60, "mins": 60, "m": 60,
    "hour": 3600, "hours": 3600, "hr": 3600, "hrs": 3600, "h": 3600,
    "day": 86400, "days": 86400,
}  # fmt: skip

WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def spoken(name: str) -> str:
    """A camera, zone or line name as a sentence says it and a person types it: 'side_gate' and
    'loading-dock' are 'side gate' and 'loading dock'."""
    return name.replace("-", " ").replace("_", " ")


def plural(n: int, label: str) -> str:
    """`n` objects of a detector label in words: '1 person', '3 people', '2 buses'; fire and smoke are
    no objects, only there or not: 'fire', 'no smoke'."""
    if label == "person":
        return "1 person" if n == 1 else f"{n} people"
    if label in ("fire", "smoke"):
        return label if n else f"no {label}"
    return f"{n} {label}" + ("" if n == 1 else "es" if label.endswith(("s", "sh", "ch", "x")) else "s")


def plural_noun(label: str) -> str:
    """A label as the noun for many of them, without a number ('no people', 'any cars'); fire and
    smoke as they are."""
    if label in ("fire", "smoke"):
        return label
    return plural(2, label)[2:]


def singular(word: str) -> str:
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "sses")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


def number(token: str) -> float | None:
    """'5', '2.5', 'five', 'a' -> a number; None otherwise."""
    if re.fullmatch(r"\d+(?:\.\d+)?", token):
        return float(token)
    value = NUMBERS.get(token)
    return float(value) if value is not None else None


def find_labels(text: str, known: set[str]) -> list[str]:
    """Detector labels the text names, in order of appearance (multi-word labels first)."""
    lowered = " " + " ".join(words(text)) + " "
    found: list[tuple[int, str]] = []
    taken: list[tuple[int, int]] = []

    def add(at: int, length: int, label: str) -> None:
        if any(a <= at < b or a < at + length <= b for a, b in taken):
            return
        taken.append((at, at + length))
        found.append((at, label))

    for label in sorted(known, key=len, reverse=True):
        if " " not in label:
            continue
        for variant in (label, label + "s", label + "es"):
            at = lowered.find(f" {variant} ")
            if at >= 0:
                add(at, len(variant) + 1, label)
    position = 0
    for token in lowered.split():
        at = lowered.find(f" {token} ", position)
        position = max(position, at + 1)
        candidates = [token, SYNONYMS.get(token, ""), singular(token), SYNONYMS.get(singular(token), "")]
        for candidate in candidates:
            if candidate and candidate in known:
                add(at, len(token) + 1, candidate)
                break
    return [label for _, label in sorted(found)]
