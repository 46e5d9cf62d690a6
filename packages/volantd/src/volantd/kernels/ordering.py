"""Load order of kernel modules: dependencies before the modules that need them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from volantd.kernels.errors import DependencyCycleError

_VISITING = 1
_DONE = 2


def order_modules(graph: Mapping[str, Iterable[str]]) -> list[str]:
    """Every module named in `graph` (maps a module to the modules it needs), dependencies first.

    Modules that appear only as dependencies are included as modules without dependencies.
    The result depends only on the graph's content, not on the mapping's iteration order:
    modules and dependencies are visited in name order (a depth-first post-order).
    Raises DependencyCycleError naming the cycle when there is none.
    """
    needs: dict[str, list[str]] = {name: sorted(set(deps)) for name, deps in graph.items()}
    for deps in list(needs.values()):
        for dep in deps:
            needs.setdefault(dep, [])

    order: list[str] = []
    state: dict[str, int] = {}
    for root in sorted(needs):
        if root in state:
            continue
        # An explicit stack instead of recursion: real module graphs are shallow, but the
        # function must not hit the recursion limit on long synthetic chains.
        stack: list[tuple[str, Iterator[str]]] = [(root, iter(needs[root]))]
        state[root] = _VISITING
        while stack:
            node, pending = stack[-1]
            for dep in pending:
                seen = state.get(dep)
                if seen is None:
                    state[dep] = _VISITING
                    stack.append((dep, iter(needs[dep])))
                    break
                if seen == _VISITING:
                    path = [name for name, _ in stack]
                    raise DependencyCycleError([*path[path.index(dep) :], dep])
            else:
                stack.pop()
                state[node] = _DONE
                order.append(node)
    return order
