"""The VOC reader on the real labelme VOC 2011 files and on hand-written edge cases."""

from __future__ import annotations

import pytest
import torch

from mocobench.datasets.voc import (VOC_CLASSES, VOCDetection, VOCFormatError, load_annotations, parse_voc_xml)


def voc_folder(labelme_dir):
    return labelme_dir / "bbox_detection" / "data_dataset_voc"


def test_labelme_xml_values(labelme_dir):
    a = parse_voc_xml(voc_folder(labelme_dir) / "Annotations" / "2011_000003.xml")
    assert a.filename == "2011_000003.jpg" and (a.width, a.height) == (500, 338)
    assert [o.name for o in a.objects] == ["person", "person"]
    # labelme writes float coordinates: kept as written.
    assert a.objects[0].bbox == pytest.approx((191.0, 107.36900369003689, 313.0, 329.36900369003695))
    # and empty <difficult/> elements: read as not difficult.
    assert [o.difficult for o in a.objects] == [False, False]
    c = parse_voc_xml(voc_folder(labelme_dir) / "Annotations" / "2011_000025.xml")
    assert [o.name for o in c.objects] == ["bus", "bus", "car"]
    assert c.objects[1].bbox == (1.0, 99.0, 107.0, 282.0)


def test_labelme_folder_counts(labelme_dir, tmp_path):
    d = tmp_path / "VOC2011"
    (d / "ImageSets" / "Main").mkdir(parents=True)
    (d / "Annotations").symlink_to(voc_folder(labelme_dir) / "Annotations")
    (d / "JPEGImages").symlink_to(voc_folder(labelme_dir) / "JPEGImages")
    (d / "ImageSets" / "Main" / "trainval.txt").write_text("2011_000003\n2011_000006\n\n2011_000025\n")
    anns = load_annotations(d, "trainval")
    assert sum(len(a.objects) for a in anns.values()) == 9
    assert sum(o.name == "person" for a in anns.values() for o in a.objects) == 6
    ds = VOCDetection(tmp_path, sets=[("2011", "trainval")])
    assert len(ds) == 3
    image, target = ds[2]  # 2011_000025: bus, bus, car
    assert image.shape == (3, 375, 500) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    assert target["labels"].tolist() == [VOC_CLASSES.index("bus") + 1] * 2 + [VOC_CLASSES.index("car") + 1]
    # 1-based inclusive (1, 99, 107, 282) -> continuous (0, 98, 107, 282)
    assert target["boxes"][1].tolist() == [0.0, 98.0, 107.0, 282.0]


def test_difficult_flags_and_bad_files(tmp_path):
    xml = tmp_path / "a.xml"
    xml.write_text("<annotation><filename>a.jpg</filename><size><width>10</width><height>8</height></size>"
                   "<object><name>dog</name><difficult>1</difficult><bndbox><xmin>1</xmin><ymin>2</ymin>"
                   "<xmax>5</xmax><ymax>6</ymax></bndbox></object>"
                   "<object><name>cat</name><difficult>0</difficult><bndbox><xmin>1</xmin><ymin>2</ymin>"
                   "<xmax>5</xmax><ymax>6</ymax></bndbox></object>"
                   "<object><name>cat</name><bndbox><xmin>1</xmin><ymin>2</ymin>"
                   "<xmax>5</xmax><ymax>6</ymax></bndbox></object></annotation>")
    assert [o.difficult for o in parse_voc_xml(xml).objects] == [True, False, False]
    bad = tmp_path / "b.xml"
    bad.write_text("<annotation><size><width>10</width><height>8</height></size>"
                   "<object><name>dog</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>x</xmax>"
                   "<ymax>6</ymax></bndbox></object></annotation>")
    with pytest.raises(VOCFormatError, match=r"b\.xml.*xmax"):
        parse_voc_xml(bad)
    (tmp_path / "c.xml").write_text("<annotation>")
    with pytest.raises(VOCFormatError, match=r"c\.xml"):
        parse_voc_xml(tmp_path / "c.xml")
    with pytest.raises(VOCFormatError, match="VOC2007"):
        VOCDetection(tmp_path, sets=[("2007", "test")])


def test_unreadable_image_is_skipped_and_counted(tmp_path):
    from PIL import Image

    d = tmp_path / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (d / sub).mkdir(parents=True)
    for i in ("000001", "000002"):
        (d / "Annotations" / f"{i}.xml").write_text(
            f"<annotation><filename>{i}.jpg</filename><size><width>16</width><height>12</height></size>"
            "<object><name>dog</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>8</xmax><ymax>8</ymax>"
            "</bndbox></object></annotation>")
    Image.new("RGB", (16, 12)).save(d / "JPEGImages" / "000002.jpg")
    (d / "JPEGImages" / "000001.jpg").write_bytes(b"not a jpeg")
    (d / "ImageSets" / "Main" / "test.txt").write_text("000001\n000002\n")
    with pytest.warns(UserWarning, match="000001.jpg"):   # named once, when the split is opened
        ds = VOCDetection(tmp_path, sets=[("2007", "test")])
    image, _ = ds[0]
    assert image.shape == (3, 12, 16) and len(ds) == 1 and ds.skipped == [str(d / "JPEGImages" / "000001.jpg")]


def test_an_id_listed_twice_is_refused(tmp_path):
    d = tmp_path / "VOC2007"
    (d / "Annotations").mkdir(parents=True)
    (d / "ImageSets" / "Main").mkdir(parents=True)
    for i in ("000001", "000002"):
        (d / "Annotations" / f"{i}.xml").write_text(
            "<annotation><size><width>64</width><height>48</height></size><object><name>dog</name><bndbox>"
            "<xmin>5</xmin><ymin>5</ymin><xmax>40</xmax><ymax>30</ymax></bndbox></object></annotation>")
    listing = d / "ImageSets" / "Main" / "test.txt"
    listing.write_text("000001\n000002\n000001\n")
    with pytest.raises(VOCFormatError) as e:   # the split would shrink to 2 images without a word
        load_annotations(d, "test")
    assert str(e.value) == f"{listing}: image id '000001' is listed twice"
