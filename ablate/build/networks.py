"""Networks from their config: the registered architecture with its normalisation layer, or a
RobustBench teacher's own architecture, sized for the dataset."""

from __future__ import annotations

import torch.nn as nn

from ablate.build.cache import zoo_key
from ablate.config import ModelConfig, TeacherConfig
from ablate.core import zoo
from ablate.core.data import Dataset
from ablate.core.models import build_model


def build_net(spec: ModelConfig, data: Dataset) -> nn.Module:
    return build_spec(spec, num_classes=data.num_classes, in_channels=data.image_shape[0])


def build_spec(spec: ModelConfig, *, num_classes: int, in_channels: int) -> nn.Module:
    """The configured architecture (with its normalisation layer) for data of this shape; a
    RobustBench teacher's own architecture (its normalisation inside)."""
    if isinstance(spec, TeacherConfig) and spec.robustbench is not None:
        return zoo.build(*zoo_key(spec))
    norm = (spec.normalize.mean, spec.normalize.std) if spec.normalize else None
    return build_model(spec.arch, num_classes=num_classes, in_channels=in_channels,
                       normalize=norm, **spec.kwargs)


