// A run's trace (GET /api/runs/{id}/trace: one root span, its children nested) as a tree: each node's latency,
// tokens and cost.

import { element, money } from "./dom.js";

// A node's tokens and dollars (the server's short names): its own when it records them (a model call; a run
// records its total), else its children's summed (an agent turn), so no call is counted twice.
function totals(node) {
  const attributes = node.attributes || {};
  const children = (node.children || []).map(totals);
  const sum = (key) => children.reduce((total, child) => total + child[key], 0);
  return {
    tokens: attributes.tokens !== undefined ? Number(attributes.tokens) : sum("tokens"),
    cost: attributes.cost_usd !== undefined ? Number(attributes.cost_usd) : sum("cost"),
  };
}

function traceNode(node) {
  const item = element("li", "trace-node " + (node.kind || ""));
  const sum = totals(node);
  const line = element("div", "trace-line");
  line.append(element("span", "trace-name", node.name));
  line.append(element("span", "trace-latency", Math.round(Number(node.duration_s || 0) * 1000) + " ms"));
  line.append(element("span", "trace-tokens", sum.tokens + " tok"));
  line.append(element("span", "trace-cost", money(sum.cost)));
  if (node.error || node.status === "error") line.append(element("span", "trace-error", node.error || "error"));
  item.append(line);
  if ((node.children || []).length) {
    const children = element("ul", "trace-children");
    node.children.forEach((child) => children.append(traceNode(child)));
    item.append(children);
  }
  return item;
}

// The tree for the trace whose root span is `root`.
export function traceTree(root) {
  const list = element("ul", "trace-tree");
  list.append(traceNode(root));
  return list;
}
