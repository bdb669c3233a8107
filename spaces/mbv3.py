"""The MobileNetV3-like space of Once-for-All and CoLLM-NAS, built in as ``mbv3``.

The space is data (``mbv3.yaml`` beside this file, read by the ordinary
YAML space loader); its network is :class:`collm_nas.models.mobilenet.MobileNetV3Net`.
Architectures print compactly, one group of layers per stage, each layer
``k<kernel>e<expansion>``::

    k3e4 k5e6 | k3e3 k3e3 k7e6 | k5e4 k5e4 | k3e6 k3e6 k3e6 k3e6 | k7e3 k7e3

(``parse_arch`` reads that form back, as well as the generic ``name=option, ...``.)
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from collm_nas.core.errors import UserError
from collm_nas.spaces.loader import load_space_file, space_from_dict
from collm_nas.core.space import SearchSpace

MBV3_FILE = Path(__file__).with_name("mbv3.yaml")
_LAYER = re.compile(r"^k(\d+)e(\d+)$")


@lru_cache(maxsize=1)
def _definition() -> dict:
    return load_space_file(MBV3_FILE).to_dict()


class MBV3Space(SearchSpace):
    """The ``mbv3`` space: 5 stages, depth 2-4, per-layer kernel 3/5/7 and expansion 3/4/6."""

    def __init__(self) -> None:
        base = space_from_dict(_definition(), source=f"space file '{MBV3_FILE}'")
        super().__init__(name=base.name, decisions=base.decisions, description=base.description,
                         base_costs=base.base_costs, default_constraints=base.default_constraints,
                         network=base.network)
        self.stages = sum(1 for d in self.decisions if d.name.endswith("_depth"))

    def format_arch(self, ncode: str) -> str:
        choice = self.decode(ncode)
        stages = []
        for s in range(1, self.stages + 1):
            depth = int(choice[f"s{s}_depth"])
            stages.append(" ".join(f"k{choice[f's{s}_l{i}_kernel']}e{choice[f's{s}_l{i}_expand']}"
                                   for i in range(1, depth + 1)))
        return " | ".join(stages)

    def parse_arch(self, text: str) -> str:
        if "=" in text:
            return super().parse_arch(text)
        stages = [part.split() for part in text.split("|")]
        if len(stages) != self.stages:
            raise UserError(f"'{text}' has {len(stages)} stages; an mbv3 architecture has {self.stages}, separated "
                            "by '|', each a list of layers like k5e4")
        choice: dict[str, str] = {}
        for s, layers in enumerate(stages, start=1):
            choice[f"s{s}_depth"] = str(len(layers))
            for i, layer in enumerate(layers, start=1):
                m = _LAYER.match(layer)
                if not m:
                    raise UserError(f"layer '{layer}' of stage {s} should read k<kernel>e<expansion>, e.g. k5e4")
                choice[f"s{s}_l{i}_kernel"], choice[f"s{s}_l{i}_expand"] = m.group(1), m.group(2)
        return self.encode(choice)


def mbv3_space() -> SearchSpace:
    """A fresh copy of the ``mbv3`` space."""
    return MBV3Space()
