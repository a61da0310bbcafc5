"""Writers for other engines: detectron2, mmseg/mmdet/mmpretrain, torchvision, timm, safetensors."""
