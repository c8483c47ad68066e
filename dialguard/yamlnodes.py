"""YAML read as nodes, for the files an admin writes (rule packs, calendar files):
what yaml.safe_load hides, a key given twice (it keeps the last one silently) and
an explicit null, found with the line it is on."""

from __future__ import annotations

import yaml

NULL_TAG = "tag:yaml.org,2002:null"


def first_duplicate(node: yaml.Node | None) -> yaml.ScalarNode | None:
    """The first key given twice in any mapping of the document (depth first), else None."""
    todo = [node] if node is not None else []
    while todo:
        n = todo.pop()
        if isinstance(n, yaml.MappingNode):
            seen: set = set()
            for k, v in n.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else id(k)
                if key in seen:
                    return k
                seen.add(key)
            todo.extend(v for _, v in reversed(n.value))
        elif isinstance(n, yaml.SequenceNode):
            todo.extend(reversed(n.value))
    return None


def is_null(node: yaml.Node) -> bool:
    """An explicit null (`key:` with nothing, `~`, `null`)."""
    return isinstance(node, yaml.ScalarNode) and node.tag == NULL_TAG


def load_nodes(text: str) -> tuple[yaml.Node | None, object]:
    """(the document's root node, its Python value) as yaml.safe_load reads it; raises yaml.YAMLError."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        return root, (loader.construct_document(root) if root is not None else None)
    finally:
        loader.dispose()
