"""Network zoo: plain ``nn.Module`` classifiers taking [0, 1] inputs (N, C, H, W) and returning logits.

Normalisation is part of the net (optional leading :class:`Normalize` layer from ``mean``/``std``), so
attacks operate in [0, 1] input space.

- :class:`LiftedMLP`: an MLP whose activities can also be inferred by minimising a lifted
  (Fenchel-Young) potential, for the AROVR methods (:mod:`lit_robust.nets.lifted`).
- :class:`MLP`: fully connected net (flatten -> Linear/ReLU stack -> Linear).
- :class:`SmallCNN`: the MNIST CNN of Madry et al. 2018 (configurable widths).
- :class:`PreActResNet` / :class:`PreActResNet18`: pre-activation ResNet (He et al. 2016), CIFAR variant
  of Rice et al. 2020.
- :class:`L2NNNConvNet`: L2-nonexpansive conv net with one head per class (Qian & Wegman 2019), whose
  confidence gap certifies an L_2 radius (layers in :mod:`lit_robust.nets.l2nnn_layers`).
- :class:`WideResNet`: WRN-depth-widen (Zagoruyko & Komodakis 2016), e.g. WRN-34-10.
"""

from lit_robust.nets.l2nnn import L2NNNConvNet
from lit_robust.nets.lifted import LiftedMLP
from lit_robust.nets.mlp import MLP
from lit_robust.nets.normalize import Normalize
from lit_robust.nets.preact_resnet import PreActResNet, PreActResNet18
from lit_robust.nets.small_cnn import SmallCNN
from lit_robust.nets.wide_resnet import WideResNet

__all__ = [
    "L2NNNConvNet",
    "LiftedMLP",
    "MLP",
    "Normalize",
    "PreActResNet",
    "PreActResNet18",
    "SmallCNN",
    "WideResNet",
]
