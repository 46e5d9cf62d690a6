"""order_modules: a deterministic load order with every dependency before its dependents."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from volantd.kernels import DependencyCycleError, order_modules


def assert_dependencies_first(graph: dict[str, list[str]], order: list[str]) -> None:
    position = {name: index for index, name in enumerate(order)}
    for module, dependencies in graph.items():
        for dependency in dependencies:
            assert position[dependency] < position[module], f"{dependency} after {module}"


def test_dependencies_come_before_the_modules_that_need_them() -> None:
    graph = {
        "virtio_net": ["virtio", "virtio_ring", "net_failover"],
        "net_failover": ["failover"],
        "virtio_mmio": ["virtio", "virtio_ring"],
        "virtio_ring": [],
        "virtio": [],
        "failover": [],
    }
    order = order_modules(graph)
    assert sorted(order) == sorted(graph)
    assert_dependencies_first(graph, order)


def test_order_is_depth_first_in_name_order() -> None:
    graph = {"c": ["b"], "b": [], "a": ["d"], "d": []}
    assert order_modules(graph) == ["d", "a", "b", "c"]


def test_order_does_not_depend_on_mapping_or_dependency_order() -> None:
    graph = {"e": ["c", "d"], "d": ["a"], "c": ["b", "a"], "b": [], "a": []}
    expected = order_modules(graph)
    shuffler = random.Random(7)
    for _ in range(20):
        items = [(name, shuffler.sample(deps, len(deps))) for name, deps in graph.items()]
        shuffler.shuffle(items)
        assert order_modules(dict(items)) == expected


def test_dependencies_missing_from_the_keys_are_included_once() -> None:
    order = order_modules({"virtio_blk": ["virtio", "virtio"], "virtio_net": ["virtio"]})
    assert order == ["virtio", "virtio_blk", "virtio_net"]


def test_empty_graph_gives_empty_order() -> None:
    assert order_modules({}) == []


def test_a_cycle_is_reported_with_its_path() -> None:
    graph = {"a": ["b"], "b": ["c"], "c": ["a"], "d": []}
    with pytest.raises(DependencyCycleError, match=r"a -> b -> c -> a") as caught:
        order_modules(graph)
    assert caught.value.cycle == ("a", "b", "c", "a")


def test_a_module_depending_on_itself_is_a_cycle() -> None:
    with pytest.raises(DependencyCycleError, match=r"loop -> loop"):
        order_modules({"loop": ["loop"]})


def test_a_cycle_behind_an_acyclic_prefix_names_only_the_cycle() -> None:
    with pytest.raises(DependencyCycleError) as caught:
        order_modules({"top": ["x"], "x": ["y"], "y": ["x"]})
    assert caught.value.cycle == ("x", "y", "x")


def test_long_chains_do_not_hit_the_recursion_limit() -> None:
    graph = {f"m{i:05}": [f"m{i + 1:05}"] for i in range(20_000)}
    order = order_modules(graph)
    assert order[0] == "m20000" and order[-1] == "m00000"


@st.composite
def acyclic_graphs(draw: st.DrawFn) -> dict[str, list[str]]:
    """Random DAGs: a module may only depend on modules earlier in a random ranking."""
    ranking = draw(st.permutations([f"mod{i}" for i in range(draw(st.integers(0, 12)))]))
    graph: dict[str, list[str]] = {}
    for index, name in enumerate(ranking):
        graph[name] = draw(st.lists(st.sampled_from(ranking[:index]), max_size=4)) if index else []
    return graph


@given(acyclic_graphs())
def test_any_acyclic_graph_gets_a_valid_complete_order(graph: dict[str, list[str]]) -> None:
    order = order_modules(graph)
    assert sorted(order) == sorted(graph)
    assert len(set(order)) == len(order)
    assert_dependencies_first(graph, order)
    assert order_modules(dict(reversed(graph.items()))) == order


@given(acyclic_graphs(), st.data())
def test_adding_a_back_edge_is_reported_as_a_cycle(
    graph: dict[str, list[str]], data: st.DataObject
) -> None:
    edges = [(module, dep) for module, deps in graph.items() for dep in deps]
    if not edges:
        return
    module, dependency = data.draw(st.sampled_from(edges))
    graph[dependency] = [*graph[dependency], module]
    with pytest.raises(DependencyCycleError) as caught:
        order_modules(graph)
    cycle = caught.value.cycle
    assert cycle[0] == cycle[-1]
    for before, after in itertools.pairwise(cycle):
        assert after in graph[before]
