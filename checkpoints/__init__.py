"""Model-and-weights layer: backbone factory, checkpoint readers and writers, zoo.

Which file holds what: ``backbones`` (factory), ``formats`` (the table of layouts we read),
``metadata`` (what each layout says about itself), ``keymaps`` (key renaming), ``arch_guess``,
``strict`` (exact keys and shapes), ``skip_init``, ``report`` (``LoadReport``), ``load``
(``load_backbone``), ``write`` (every file we write), ``safe_pickle`` (reading containers),
``zoo`` and ``fetch``.
"""

from mocobench.checkpoints.backbones import Backbone, BackboneSpec, build_backbone, canonical_keys
from mocobench.checkpoints.errors import CheckpointError
from mocobench.checkpoints.load import load_backbone
from mocobench.checkpoints.report import LoadReport
from mocobench.checkpoints.strict import strict_load
from mocobench.checkpoints.write import save_backbone

__all__ = ["Backbone", "BackboneSpec", "build_backbone", "canonical_keys", "CheckpointError",
           "LoadReport", "load_backbone", "save_backbone", "strict_load"]
