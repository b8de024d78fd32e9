"""Control-flow simplification: an ``If`` whose condition is a constant becomes its taken branch.

Once constant folding and shape simplification have turned a condition into a
constant (silero-vad's branches test shapes that are static inside them), only one
branch can ever run. Its nodes move into the enclosing graph and the ``If``
disappears. Values are unchanged: the same nodes compute the same tensors.
"""
from __future__ import annotations

from typing import Any

from ..registry import PassContext, register_pass
from ._common import (constant_value, gs_module, is_constant, is_default_domain, is_empty,
                      iter_subgraphs, protected_names, replace_all_uses)


def _inline_if(graph: Any, node: Any, protected: set[str]) -> bool:
    gs = gs_module()
    cond = node.inputs[0] if node.inputs else None
    if cond is None or not is_constant(cond):
        return False
    value = constant_value(cond)
    if value.size != 1:
        return False
    branch = node.attrs.get("then_branch" if bool(value.reshape(-1)[0]) else "else_branch")
    if not isinstance(branch, gs.Graph) or branch.inputs or len(branch.outputs) != len(node.outputs):
        return False
    nodes = list(branch.nodes)
    produced = {id(t) for n in nodes for t in n.outputs}
    interface = {t.name for t in graph.outputs}
    for out, res in zip(list(node.outputs), list(branch.outputs)):
        if out.name in interface or out.name in protected or id(res) not in produced:
            # The If's output name must survive (or the result comes from outside the branch):
            # an Identity writes it.
            ident = gs.Node("Identity", name=f"{out.name}__inlined", inputs=[res], outputs=[])
            node.outputs[node.outputs.index(out)] = gs.Variable(f"{out.name}__if_removed")
            ident.outputs.append(out)
            nodes.append(ident)
        else:
            replace_all_uses(out, res)
    node.inputs.clear()
    node.outputs.clear()
    graph.nodes.extend(nodes)
    branch.nodes.clear()
    return True


@register_pass("inline_constant_if", order=25)
def inline_constant_if(graph: Any, ctx: PassContext) -> Any:
    """Replace each ``If`` with a constant condition by the nodes of the branch it takes.

    Also inside nested graphs. An If output that is a graph output or protected keeps
    its name (an Identity writes it). Values are unchanged.
    """
    inlined = 0
    changed = True
    while changed:  # an inlined branch may contain another constant If
        changed = False
        for g in [graph, *iter_subgraphs(graph)]:
            protected = protected_names(g, ctx)
            for node in list(g.nodes):
                if node.op == "If" and is_default_domain(node) and node.outputs \
                        and not any(is_empty(t) for t in node.inputs[:1]) and _inline_if(g, node, protected):
                    inlined += 1
                    changed = True
            if changed:
                g.cleanup(remove_unused_graph_inputs=False, recurse_subgraphs=False).toposort()
                break  # the subgraph list changed
    ctx.record("inline_constant_if", inlined=inlined)
    return graph

