"""The compatibility matrix (docs/compatibility.md) lists exactly the flows the tests cover.

Each row of its table names a flow id and the tests marked ``@pytest.mark.compat(flow_id)``;
these tests read the markers off the test functions (importing the modules, as pytest does)
and the rows out of the document, and fail on any difference in either direction.
"""

from __future__ import annotations

import importlib
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parents[2]
DOC = ROOT / "docs" / "compatibility.md"
SEARCHED = ("tests/compat", "tests/metadata", "tests/proxy")
FLOW_ID = re.compile(r"^(py|gcloud|node)(-[a-z0-9]+)+$")
HEADER = "| Flow id | Client | Flow | Pointed at tokensmith by | Tests |"

Coverage = dict[str, set[str]]  # flow id → {"tests/…/test_x.py::test_y", …}


def marked_flows() -> tuple[Coverage, list[str]]:
    """Every ``compat`` marker on a test function of the searched packages, and the markers
    that are not one flow id on one test function."""
    flows: Coverage = defaultdict(set)
    problems: list[str] = []
    for directory in SEARCHED:
        for path in sorted((ROOT / directory).glob("test_*.py")):
            where = path.relative_to(ROOT).as_posix()
            module = importlib.import_module(where.removesuffix(".py").replace("/", "."))
            module_marks = getattr(module, "pytestmark", [])
            if any(m.name == "compat" for m in _as_list(module_marks)):
                problems.append(f"{where}: compat on the module, not on its test functions")
            for name, function in vars(module).items():
                if not name.startswith("test_") or not callable(function):
                    continue
                for mark in getattr(function, "pytestmark", []):
                    if mark.name != "compat":
                        continue
                    if len(mark.args) != 1 or mark.kwargs or not isinstance(mark.args[0], str):
                        problems.append(f"{where}::{name}: {mark}")
                        continue
                    flows[mark.args[0]].add(f"{where}::{name}")
    return dict(flows), problems


def _as_list(marks: object) -> list[Any]:
    return list(marks) if isinstance(marks, list | tuple) else [marks]


def documented_flows() -> tuple[Coverage, list[str]]:
    """The table's rows: flow id → tests, and the flow ids in the order they appear."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    start = lines.index(HEADER) + 2  # the header, then the |---| line
    flows: Coverage = {}
    order: list[str] = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert len(cells) == 5, f"a row of {len(cells)} cells: {line}"
        flow_id = cells[0].strip("`")
        order.append(flow_id)
        flows[flow_id] = set(re.findall(r"`([^`]+::test_\w+)`", cells[4]))
    return flows, order


@pytest.fixture(scope="module")
def marked() -> Coverage:
    return marked_flows()[0]


@pytest.fixture(scope="module")
def documented() -> Coverage:
    return documented_flows()[0]


def test_every_marker_names_one_well_formed_flow(marked: Coverage) -> None:
    """Markers sit on test functions with one flow id each, client-prefixed kebab-case."""
    assert marked, "no test carries a compat marker"
    assert marked_flows()[1] == []
    assert [flow for flow in marked if not FLOW_ID.match(flow)] == []


def test_the_table_lists_exactly_the_marked_flows(marked: Coverage, documented: Coverage) -> None:
    """A flow in the table has a marked test, and a marked flow has a row in the table."""
    assert sorted(set(documented) - set(marked)) == [], "rows without a marked test"
    assert sorted(set(marked) - set(documented)) == [], "marked flows missing from the table"


def test_each_row_names_exactly_its_marked_tests(marked: Coverage, documented: Coverage) -> None:
    """The Tests cell of each row lists the very tests carrying that flow's marker."""
    wrong = {
        flow: {
            "listed, not marked": documented[flow] - tests,
            "marked, not listed": tests - documented[flow],
        }
        for flow, tests in marked.items()
        if flow in documented and documented[flow] != tests
    }
    assert wrong == {}


def test_flow_ids_appear_once_in_the_table() -> None:
    """No flow has two rows."""
    _, order = documented_flows()
    assert sorted({flow for flow in order if order.count(flow) > 1}) == []


@pytest.mark.parametrize(
    "flow",
    [
        "py-md-detect",
        "py-md-access-token",
        "py-md-access-token-scopes",
        "py-md-id-token",
        "py-md-fetch-id-token",
        "py-imp-access-token",
        "py-imp-delegates",
        "py-imp-id-token",
        "py-imp-sign-bytes",
        "py-adc-authorized-user",
        "py-adc-service-account",
        "py-adc-impersonated",
        "py-sa-key-access-token",
        "py-sa-key-id-token",
        "py-verify-token-pem",
        "py-verify-token-jwks",
        "py-verify-oauth2-token",
        "gcloud-md-access-token",
        "gcloud-md-id-token",
        "gcloud-key-activate",
        "gcloud-imp-access-token",
        "gcloud-imp-id-token",
        "gcloud-imp-chain",
        "gcloud-sign-blob",
        "gcloud-sign-jwt",
        "node-md-access-token",
        "node-md-id-token",
        "node-imp-access-token",
        "node-imp-id-token",
        "node-imp-sign",
        "node-jwt-key",
        "node-verify-id-token",
        "node-token-info",
    ],
)
def test_the_required_flows_stay_covered(flow: str, marked: Coverage) -> None:
    """Each flow of COMPAT.md §1–§5 that must keep working has at least one marked test."""
    assert marked.get(flow), f"no test covers {flow}"
