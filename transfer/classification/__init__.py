"""Classification transfer: linear probe (``paper`` SGD and ``fast`` cached-feature protocols),
DINO's weighted k-NN and semi-supervised fine-tuning on ImageNet-layout data.

Files: ``protocols.py`` (configs and presets), ``data.py`` (folders, transforms, loaders, DDP
reduction), ``features.py`` (extraction and the feature cache), ``linear.py``, ``knn.py``,
``semi.py``, ``cli.py`` (``mocobench eval linear|knn|semi``).
"""
