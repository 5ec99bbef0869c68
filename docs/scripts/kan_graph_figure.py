"""Draw a small KAN and its KAN-graph (run by docs/conf.py at every docs build).

Left: the KAN as a network whose edges *are* learnable functions (each edge is drawn
with a small plot of its edge function phi_ij on the grid range). Right: the same KAN
as the graph WS-KAN consumes, built by :func:`wskan_ext.kan_to_graph`: node colours show
the roles (input and output neurons carry positional identity, hidden neurons only
their layer role), edge colours the edge's canonical base weight.

Usage: ``python docs/scripts/kan_graph_figure.py OUT.png``
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from wskan_ext import KAN, kan_to_graph  # noqa: E402
from wskan_ext.kan import layer_forward  # noqa: E402
from wskan_ext.graph import ROLE_HIDDEN, ROLE_INPUT  # noqa: E402


def main(out: str) -> None:
    w = KAN([2, 3, 2], grid=4, k=3, noise_scale=3.0, generator=torch.Generator().manual_seed(3)).weights(detach=True)
    graph = kan_to_graph(w)
    widths = w.widths
    pos = {}
    for l, n in enumerate(widths):
        for i in range(n):
            pos[(l, i)] = (l * 3.0, (i - (n - 1) / 2) * 1.6)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    # ---- left: the KAN with its edge functions
    for l in range(w.depth):
        lo, hi = w.grid[l][:, w.k[l]].min().item(), w.grid[l][:, -w.k[l] - 1].max().item()
        xs = torch.linspace(lo, hi, 60)
        for i in range(widths[l]):
            xin = torch.zeros(60, widths[l])
            xin[:, i] = xs
            single = w._replace(node_scale=[torch.ones_like(t) for t in w.node_scale],
                                node_bias=[torch.zeros_like(t) for t in w.node_bias])
            # phi_ij(x) for every j: evaluate layer l with only input i active, minus the
            # contribution of the other (zero) inputs
            base = layer_forward(single, l, torch.zeros(1, widths[l]))
            ys = layer_forward(single, l, xin) - base
            for j in range(widths[l + 1]):
                (x0, y0), (x1, y1) = pos[(l, i)], pos[(l + 1, j)]
                ax1.plot([x0, x1], [y0, y1], color="0.8", lw=1, zorder=1)
                cx, cy = x0 + 0.3 * (x1 - x0), y0 + 0.3 * (y1 - y0)
                y = ys[:, j]
                y = (y - y.mean()) / (y.abs().max() + 1e-9) * 0.22
                ax1.plot(cx - 0.3 + 0.6 * (xs - lo) / (hi - lo), cy + y, color="C3", lw=1.3, zorder=3)
    for (l, i), (x, y) in pos.items():
        ax1.scatter([x], [y], s=260, color="white", edgecolor="k", zorder=4)
        ax1.text(x, y, f"{i}", ha="center", va="center", fontsize=8, zorder=5)
    ax1.set_title("a KAN [2, 3, 2]: edges are learnable functions $\\phi_{ij}$")
    ax1.axis("off")

    # ---- right: the KAN-graph from kan_to_graph
    role = graph.node_role.tolist()
    layer = graph.node_layer.tolist()
    posn = graph.node_pos.tolist()
    xy = [pos[(layer[v], posn[v])] for v in range(graph.num_nodes)]
    eattr = graph.edge_attr[:, -1]
    lim = eattr.abs().max().item() + 1e-9
    cmap = plt.get_cmap("coolwarm")
    for e, (s, t) in enumerate(graph.edge_index.t().tolist()):
        (x0, y0), (x1, y1) = xy[s], xy[t]
        ax2.annotate("", xy=(x1, y1), xytext=(x0, y0),
                     arrowprops=dict(arrowstyle="-|>", color=cmap(0.5 + 0.5 * eattr[e].item() / lim), lw=1.6,
                                     shrinkA=9, shrinkB=9))
    colours = {ROLE_INPUT: "C0", ROLE_HIDDEN: "0.6"}
    for v, (x, y) in enumerate(xy):
        c = colours.get(role[v], "C2")
        ax2.scatter([x], [y], s=260, color=c, edgecolor="k", zorder=4)
        label = f"in {posn[v]}" if role[v] == ROLE_INPUT else ("h" if role[v] == ROLE_HIDDEN else f"out {posn[v]}")
        ax2.text(x, y - 0.42, label, ha="center", va="top", fontsize=8)
    ax2.set_title(f"its KAN-graph: {graph.num_nodes} nodes, {graph.num_edges} edges\n"
                  "edge colour = canonical base weight; hidden nodes are anonymous", fontsize=10)
    ax2.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=120)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "kan_graph.png")
