"""The NAS-Bench-201 cell space and its architecture strings.

A cell has 4 nodes; each of its 6 edges (in the benchmark's order
1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2) takes one of 5 operations.
The NCode digit of an edge is the operation's index in ``OPERATIONS``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import ClassVar

from collm_nas.core.errors import UserError
from collm_nas.core.space import Decision, Problem, SearchSpace

OPERATIONS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# What each operation is, in words (a model's question names them so).
OPERATION_TEXT = {
    "none": "no operation: the edge carries zeros (it is cut)",
    "skip_connect": "an identity skip connection",
    "nor_conv_1x1": "a 1x1 convolution (ReLU, convolution, batch normalisation)",
    "nor_conv_3x3": "a 3x3 convolution (ReLU, convolution, batch normalisation)",
    "avg_pool_3x3": "a 3x3 average pooling",
}
# (to_node, from_node) in the benchmark's edge order.
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
_EDGE_RE = re.compile(r"^([a-z_0-9]+)~(\d)$")


class NB201Space(SearchSpace):
    # Learned rankers get the live-edge share of every operation (see :func:`live_operation_shares`).
    provides_features: ClassVar[bool] = True
    network = "collm_nas.models.nb201_net:NB201_NETWORK"

    def __init__(self) -> None:
        super().__init__(
            name="nb201",
            description=(
                "NAS-Bench-201 cell: a directed acyclic graph of 4 nodes (node 0 is the cell input, "
                "node 3 its output). Every edge j->i applies one operation; a node sums its incoming "
                "edges. The network stacks this cell 15 times (3 stages of 5, channels 16/32/64)."
            ),
            decisions=[
                Decision(
                    name=f"edge_{dst}<-{src}",
                    options=OPERATIONS,
                    description=f"operation on the edge from node {src} to node {dst}",
                )
                for dst, src in EDGES
            ],
        )

    def network_key(self, ncode: str) -> str:
        """The function the cell computes (see :func:`cell_function`): isomorphic cells and cells that
        differ only in dead edges share it. 15,284 legal codes write 4,929 networks."""
        if len(ncode) != len(EDGES) or any(c not in "01234" for c in ncode):
            return ncode  # not a cell (illegal anyway): its own key
        return cell_function(ncode)

    # Benchmark string <-> NCode -------------------------------------------
    def format_arch(self, ncode: str) -> str:
        return arch_string(list(self.decode(ncode).values()))

    def parse_arch(self, text: str) -> str:
        text = text.strip()
        nodes = text.split("+")
        if len(nodes) != 3:
            raise UserError(
                f"'{text}' is not a NAS-Bench-201 string; expected |op~0|+|op~0|op~1|+|op~0|op~1|op~2|"
            )
        digits = []
        for dst, node in enumerate(nodes, start=1):
            if not (node.startswith("|") and node.endswith("|")):
                raise UserError(f"node {dst} of '{text}' must be written between '|' bars")
            edges = node[1:-1].split("|")
            if len(edges) != dst:
                raise UserError(f"node {dst} of '{text}' needs {dst} incoming edges, got {len(edges)}")
            for src, edge in enumerate(edges):
                m = _EDGE_RE.match(edge)
                if not m or int(m.group(2)) != src:
                    raise UserError(f"edge '{edge}' of node {dst} should read op~{src}")
                if m.group(1) not in OPERATIONS:
                    raise UserError(f"unknown operation '{m.group(1)}'; known: {', '.join(OPERATIONS)}")
                digits.append(str(OPERATIONS.index(m.group(1))))
        return "".join(digits)

    # Structural rule ---------------------------------------------------------
    def structural_problems(self, ncode: str) -> list[Problem]:
        if not reaches_output(ncode):
            return [
                Problem(
                    "structure",
                    "degenerate cell: no path of non-'none' edges leads from the input (node 0) to the output (node 3)",
                )
            ]
        return []

    def features(self, ncodes: Sequence[str]) -> list[tuple[float, ...]]:
        """Per code: the share of the 6 edges that are live and carry each operation (skip, 1x1, 3x3, pool)."""
        return [live_operation_shares(code) for code in ncodes]

    def option_text(self, position: int, option: str) -> str:
        return OPERATION_TEXT.get(option, option)

    def effective_options(self, ncode: str) -> list[str | None]:
        """Per edge, its operation where it is live, else ``none``: a dead edge computes nothing (see
        :func:`live_edges`)."""
        return [OPERATIONS[int(d)] if live else "none" for d, live in zip(ncode, live_edges(ncode))]

    def rules_text(self) -> str:
        return (
            "a cell must have a path of non-'none' edges from node 0 to node 3; "
            "otherwise it is degenerate (its output is constant) and illegal."
        )


def reaches_output(ncode: str) -> bool:
    """Whether node 3 is reachable from node 0 through non-``none`` edges."""
    reached = {0}
    for (dst, src), digit in zip(EDGES, ncode):
        if digit != "0" and src in reached:
            reached.add(dst)
    return 3 in reached


def live_edges(ncode: str) -> list[bool]:
    """Per edge: whether it lies on a path of non-``none`` edges from the input (node 0) to the output (node 3).

    The other edges do not change what the cell computes (their input is zero or their output reaches
    nothing), so architectures that differ only there are the same network.
    """
    reached = {0}
    for (dst, src), digit in zip(EDGES, ncode):
        if digit != "0" and src in reached:
            reached.add(dst)
    reaching = {3}
    for node in (2, 1):
        if any(digit != "0" and src == node and dst in reaching for (dst, src), digit in zip(EDGES, ncode)):
            reaching.add(node)
    return [digit != "0" and src in reached and dst in reaching for (dst, src), digit in zip(EDGES, ncode)]


@lru_cache(maxsize=16_384)  # the space has 15,625 codes
def cell_function(ncode: str) -> str:
    """What the cell computes, written so that two codes of one network give one string.

    Each node is a sum (a sorted multiset of terms) over its incoming edges: ``none`` adds nothing, a
    ``skip_connect`` adds its source's terms themselves (sums are associative), any other operation adds
    ``op(source)``; a source that computes nothing (no live input) adds nothing either. Node 3's sum is
    the cell: the order of a sum's terms and edges that never reach the output no longer matter. A
    degenerate cell gives ``""``. (NAS-Bench-201's authors count 6,466 classes with a form that keeps a
    zero term apart from its absence; with zeros dropped, as here, 15,284 legal codes are 4,929 networks.)
    """
    terms: dict[int, tuple[str, ...]] = {0: ("x",)}
    for node in (1, 2, 3):
        out: list[str] = []
        for (dst, src), digit in zip(EDGES, ncode):
            if dst != node or digit == "0" or not terms[src]:
                continue
            if OPERATIONS[int(digit)] == "skip_connect":
                out.extend(terms[src])
            else:
                out.append(f"{OPERATIONS[int(digit)]}({'+'.join(terms[src])})")
        terms[node] = tuple(sorted(out))
    return "+".join(terms[3])


@lru_cache(maxsize=16_384)  # the space has 15,625 codes
def live_operation_shares(ncode: str) -> tuple[float, ...]:
    """The cell's effective graph in four numbers: per operation other than ``none`` (in ``OPERATIONS``
    order), the share of the 6 edges that are live (:func:`live_edges`) and carry it; each lies in [0, 1]."""
    live = [digit for digit, on in zip(ncode, live_edges(ncode)) if on]
    return tuple(live.count(str(op)) / len(EDGES) for op in range(1, len(OPERATIONS)))


def arch_string(ops: list[str] | tuple[str, ...]) -> str:
    """The benchmark's string of the six edge operations (edge order 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2)."""
    nodes, k = [], 0
    for dst in (1, 2, 3):
        parts = []
        for src in range(dst):
            parts.append(f"{ops[k]}~{src}")
            k += 1
        nodes.append("|" + "|".join(parts) + "|")
    return "+".join(nodes)
