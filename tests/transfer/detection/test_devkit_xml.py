"""The test annotations detectron2's VOC evaluator (``parse_rec``) cannot read are found before
training: each case is checked against detectron2's own parser where it is installed."""

from __future__ import annotations

import os

import pytest

from mocobench.transfer.detection.devkit_xml import evaluator_problem, evaluator_problems

GOOD = ("<object><name>cat</name><pose>Left</pose><truncated>0</truncated><difficult>0</difficult>"
        "<bndbox><xmin>1</xmin><ymin>2</ymin><xmax>30</xmax><ymax>40</ymax></bndbox></object>")
CASES = {
    "good": (GOOD, None),
    "no objects": ("", None),
    "float corner": (GOOD.replace("<xmin>1</xmin>", "<xmin>1.5</xmin>"), "<bndbox/xmin> is '1.5'"),
    "empty difficult": (GOOD.replace("<difficult>0</difficult>", "<difficult/>"), "<difficult> is ''"),
    "no pose": (GOOD.replace("<pose>Left</pose>", ""), "has no <pose>"),
    "no truncated": (GOOD.replace("<truncated>0</truncated>", ""), "<truncated> is missing"),
}


@pytest.mark.parametrize("case", CASES)
def test_what_detectron2s_evaluator_cannot_read_is_named(tmp_path, case):
    objects, why = CASES[case]
    xml = tmp_path / "000001.xml"
    xml.write_text(f"<annotation><filename>000001.jpg</filename>{objects}</annotation>")
    found = evaluator_problem(xml)
    assert (found is None) if why is None else (why in found), found
    from mocobench.transfer.adapters.detectron2_compat import patched

    with patched():
        try:
            from detectron2.evaluation.pascal_voc_evaluation import parse_rec
        except ImportError as e:
            if os.environ.get("CI") == "true":
                pytest.fail(f"detectron2 must run in CI (./run_all.sh engines installs it): {e}")
            return   # the rule is still checked above; detectron2's own parser confirms it where installed
        if why is None:
            parse_rec(str(xml))
        else:
            with pytest.raises((AttributeError, TypeError, ValueError)):
                parse_rec(str(xml))


def test_every_file_is_named_with_its_problem(tmp_path):
    a, b = tmp_path / "a.xml", tmp_path / "b.xml"
    a.write_text(f"<annotation>{CASES['good'][0]}</annotation>")
    b.write_text("<annotation><object>")
    found = evaluator_problems([a, b])
    assert len(found) == 1 and found[0].startswith(f"{b}: not readable XML")
