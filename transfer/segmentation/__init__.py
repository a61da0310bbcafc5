"""Semantic segmentation transfer: FCN (MoCo appendix) / DeepLabV3 heads on a dilated backbone,
Cityscapes and VOC 2012, torchvision engine (default) or MMSegmentation (``--engine mmseg``)."""
