"""YAML as echobench reads it (suite files, KEY=VALUE options): safe, strict and bounded.

`load_yaml` is `yaml.safe_load` (no Python tags) plus three rules a suite file's author expects:

- a key given twice in one mapping is an error (safe_load keeps the last one silently);
- nesting is bounded (`MAX_DEPTH` levels), so a deep document is refused, not a RecursionError;
- aliases are bounded: the document, with every alias and merge (`<<`) expanded, may have at most
  `MAX_NODES` nodes, and an alias may not contain itself; a few hundred bytes of nested aliases
  would otherwise expand to gigabytes;
- `1e-4` is a number, as in YAML 1.2 and JSON (YAML 1.1, which PyYAML follows, reads it as a string
  unless it has a dot: `1.0e-4`).

Every failure is an `EchobenchError` that names the source and, where YAML knows it, the line.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from echobench.errors import EchobenchError

MAX_NODES = 100_000  # the registered suites have a few hundred; a results table of 100k cells is not a suite
MAX_DEPTH = 100  # nesting levels; the registered suites use 5


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and nesting deeper than `MAX_DEPTH`, and reads `1e-4` as
    a float (see the module's doc)."""

    depth = 0

    def compose_node(self, parent, index):
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise EchobenchError(f"line {self.peek_event().start_mark.line + 1}: nested more than {MAX_DEPTH} "
                                     f"levels deep")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def compose_mapping_node(self, anchor):
        node = super().compose_mapping_node(anchor)
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise EchobenchError(f"line {key_node.start_mark.line + 1}: the key {key_node.value!r} is given "
                                         f"twice in one mapping; keep one")
                seen.add(key)
        return node


# The resolvers are a dict of lists shared with SafeLoader: copy the lists before adding to them.
StrictLoader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def expanded_size(node: yaml.Node, limit: int = MAX_NODES) -> int:
    """Nodes of the document under `node` with every alias expanded (a node reached twice counts twice);
    EchobenchError above `limit` or for an alias that contains itself. Linear in the composed graph."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(n: yaml.Node) -> int:
        if id(n) in sizes:
            return sizes[id(n)]
        if id(n) in active:
            raise EchobenchError("an alias refers to a node that contains it (a recursive structure)")
        active.add(id(n))
        total = 1
        if isinstance(n, yaml.SequenceNode):
            total += sum(size(c) for c in n.value)
        elif isinstance(n, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in n.value)
        active.discard(id(n))
        if total > limit:
            raise EchobenchError(f"its aliases expand to more than {limit:,} values; write the values out "
                                 f"or use fewer nested aliases")
        sizes[id(n)] = total
        return total

    return size(node)


def load_yaml(text: str, source: str) -> Any:
    """The YAML document `text` (from `source`, named in messages) under the rules above."""
    loader = StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        expanded_size(node)
        return loader.construct_document(node)
    except EchobenchError as exc:
        raise EchobenchError(f"{source}: {exc}") from None
    except yaml.MarkedYAMLError as exc:  # one line: where, and what
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise EchobenchError(f"{source} is not valid YAML{where}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise EchobenchError(f"{source} is not valid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise EchobenchError(f"{source} is nested too deeply to be read") from None
    finally:
        loader.dispose()
