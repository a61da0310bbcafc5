"""Detection transfer: VOC07+12 Faster R-CNN and COCO Mask R-CNN (torchvision engine, detectron2 when
installed), the VOC devkit AP and COCOeval scoring. See docs/detection.md.

Files: ``protocols.py`` (presets), ``models.py`` (R50-C4 / R50-FPN builders), ``train.py`` (loop,
resume, evaluation, records), ``voc_eval.py`` (VOC AP), ``detectron2_engine.py``, ``cli.py``.
"""
