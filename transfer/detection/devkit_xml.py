"""What detectron2's VOC evaluator needs of a test annotation that our reader does not.

``PascalVOCDetectionEvaluator`` reads each test XML with its own ``parse_rec`` at the end of
training: every object needs ``<pose>``, and ``<truncated>``, ``<difficult>`` and the four box
corners written as integers (``int(text)``). Our reader (``datasets/voc.py``) accepts float corners,
an empty ``<difficult/>`` and a missing ``<pose>``, as the VOC devkit's own MATLAB reader does and
as annotation tools (labelme's export) write them; detectron2 would then fail after the whole
schedule. The engine checks the test split with :func:`evaluator_problems` before it trains.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

INTEGER_FIELDS = ("truncated", "difficult", "bndbox/xmin", "bndbox/ymin", "bndbox/xmax", "bndbox/ymax")


def evaluator_problem(xml: str | Path) -> str | None:
    """Why ``parse_rec`` would fail on annotation ``xml`` (the first reason), or None."""
    try:
        root = ET.parse(xml).getroot()
    except (OSError, ET.ParseError) as e:
        return f"not readable XML ({e})"
    for k, obj in enumerate(root.findall("object")):
        what = f"object {k + 1}"
        if obj.find("name") is None:
            return f"{what} has no <name>"
        if obj.find("pose") is None:
            return f"{what} has no <pose>"
        for field in INTEGER_FIELDS:
            node = obj.find(field)
            text = None if node is None else (node.text or "").strip()
            try:
                int(text)
            except (TypeError, ValueError):
                shown = "missing" if node is None else f"{text!r}"
                return f"{what}: <{field}> is {shown}, not an integer"
    return None


def evaluator_problems(xmls) -> list[str]:
    """``"FILE: why"`` for each annotation of ``xmls`` detectron2's evaluator could not read."""
    return [f"{x}: {why}" for x in xmls if (why := evaluator_problem(x))]
