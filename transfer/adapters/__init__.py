"""Engine adapters: what detectron2 and mmseg/mmdet/mmpretrain need (key names, configs, files); the
``mocobench convert`` command. torchvision/timm state dicts and safetensors are written by
``mocobench.checkpoints.write``."""
