"""Key compatibility with RobustBench's own architecture definitions (robustbench 1.1.1): for PreAct
ResNet-18 (both of its layouts), WideResNet-28-10 and WideResNet-34-10, our net has the same state_dict
keys and shapes, a RobustBench state dict (saved as RobustBench files are: ``module.``-prefixed, inside
``{"state_dict": ...}``) loads through our loader, and both nets give the same logits on the same input.

RobustBench's code is read from its wheel (``make test`` downloads it to ``.venv/wheels``; installing
robustbench would replace CPU torch with a CUDA build): ``model_zoo/architectures/resnet.py`` and
``wide_resnet.py`` need only torch.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from lit_robust.checkpoint import load_module
from lit_robust.methods import PGDAT
from lit_robust.nets import PreActResNet18, WideResNet

WHEELS = Path(os.environ.get("ROBUSTBENCH_WHEELS", Path(sys.prefix) / "wheels"))


@pytest.fixture(scope="module")
def robustbench(tmp_path_factory):
    wheels = sorted(WHEELS.glob("robustbench-1.1.1-*.whl"))
    if not wheels:
        pytest.fail(
            f"no robustbench 1.1.1 wheel in {WHEELS}: pip download --no-deps robustbench==1.1.1 -d {WHEELS}"
        )
    folder = tmp_path_factory.mktemp("robustbench")
    modules = {}
    with zipfile.ZipFile(wheels[0]) as wheel:
        for name in ("resnet", "wide_resnet"):
            source = folder / f"rb_{name}.py"
            source.write_bytes(wheel.read(f"robustbench/model_zoo/architectures/{name}.py"))
            spec = importlib.util.spec_from_file_location(f"rb_{name}", source)
            modules[name] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(modules[name])
    return modules


CASES = {
    "PreActResNet-18 (Rice et al.: PreActBlockV2, bn_before_fc)": (
        lambda rb: rb["resnet"].PreActResNet(rb["resnet"].PreActBlockV2, [2, 2, 2, 2], bn_before_fc=True),
        lambda: PreActResNet18(),
    ),
    "PreActResNet-18 (plain)": (
        lambda rb: rb["resnet"].PreActResNet18(),
        lambda: PreActResNet18(final_bn=False, shortcut_on="input"),
    ),
    "WideResNet-28-10": (
        lambda rb: rb["wide_resnet"].WideResNet(depth=28, widen_factor=10),
        lambda: WideResNet(28, 10),
    ),
    "WideResNet-34-10": (
        lambda rb: rb["wide_resnet"].WideResNet(depth=34, widen_factor=10),
        lambda: WideResNet(34, 10),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_robustbench_weights_load_key_for_key_and_give_the_same_logits(name, robustbench, tmp_path):
    theirs_of, ours_of = CASES[name]
    torch.manual_seed(0)
    theirs, model = theirs_of(robustbench).eval(), PGDAT(net=ours_of(), eps=8 / 255)
    theirs_state, ours_state = theirs.state_dict(), model.net.state_dict()
    assert list(theirs_state) == list(ours_state)
    assert all(theirs_state[k].shape == ours_state[k].shape for k in ours_state)
    for module in theirs.modules():  # non-trivial BatchNorm statistics, so eval-mode outputs test them too
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    file = tmp_path / "robustbench.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in theirs.state_dict().items()}}, file)
    load_module(model, file)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.net.eval()(x), theirs(x), atol=1e-5, rtol=1e-5)


def test_a_robustbench_net_with_its_own_normalisation_buffers_loads(robustbench, tmp_path):
    """Rice et al.'s RobustBench net keeps the CIFAR-10 mean and std as ``mu``/``sigma`` buffers and
    normalises in ``forward``: they load into our net's Normalize layer (``normalize.mean``/``std``)."""
    rb = robustbench["resnet"]
    mean, std = [0.4914, 0.4822, 0.4465], [0.2471, 0.2435, 0.2616]

    class Rice2020(rb.PreActResNet):  # as RobustBench's Rice2020OverfittingNetL2
        def __init__(self):
            super().__init__(rb.PreActBlockV2, [2, 2, 2, 2], bn_before_fc=True)
            self.register_buffer("mu", torch.tensor(mean).view(1, 3, 1, 1))
            self.register_buffer("sigma", torch.tensor(std).view(1, 3, 1, 1))

        def forward(self, x):
            return super().forward((x - self.mu) / self.sigma)

    torch.manual_seed(0)
    theirs = Rice2020().eval()
    file = tmp_path / "rice.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in theirs.state_dict().items()}}, file)
    model = PGDAT(net=PreActResNet18(mean=[0.5, 0.5, 0.5], std=[1.0, 1.0, 1.0]), eps=8 / 255)
    load_module(model, file)
    assert torch.allclose(model.net.normalize.mean.flatten(), torch.tensor(mean))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.net.eval()(x), theirs(x), atol=1e-5, rtol=1e-5)
