"""Model-and-weights layer: backbone factory, checkpoint readers/writers, zoo."""

from checkpoints.backbones import Backbone, BackboneSpec, build_backbone, canonical_keys
from checkpoints.load import CheckpointError, LoadReport, load_backbone, save_backbone, strict_load

__all__ = ["Backbone", "BackboneSpec", "build_backbone", "canonical_keys", "CheckpointError",
           "LoadReport", "load_backbone", "save_backbone", "strict_load"]
