// The AG-UI wire as the page reads it: server-sent events from a POST (so fetch, not EventSource) and the
// RFC 6902 patches of STATE_DELTA.

// Server-sent events from a POST: fetch's body read chunk by chunk, split into events at blank lines.
export async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  const flush = (block) => {
    const data = block
      .split(/\r?\n/)
      .filter((line) => line.startsWith("data:"))
      .map((line) => line.slice(5).replace(/^ /, ""))
      .join("\n");
    if (data) onEvent(JSON.parse(data));
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    const blocks = buffer.split(/\r?\n\r?\n/);
    buffer = blocks.pop();
    blocks.forEach(flush);
  }
  if (buffer.trim()) flush(buffer);
}

// RFC 6902, the operations AG-UI's STATE_DELTA sends.
export function applyPatch(document_, operations) {
  let root = document_;
  const split = (path) => path.split("/").slice(1).map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"));
  const get = (path) => split(path).reduce((node, key) => (node == null ? undefined : node[key]), root);
  const put = (path, value, insert) => {
    const keys = split(path);
    if (!keys.length) return (root = value);
    const last = keys.pop();
    const parent = keys.reduce((node, key) => node[key], root);
    if (Array.isArray(parent)) {
      const index = last === "-" ? parent.length : Number(last);
      parent.splice(index, insert ? 0 : 1, value);
    } else parent[last] = value;
  };
  const remove = (path) => {
    const keys = split(path);
    const last = keys.pop();
    const parent = keys.reduce((node, key) => node[key], root);
    if (Array.isArray(parent)) parent.splice(Number(last), 1);
    else delete parent[last];
  };
  const copy = (value) => (value === undefined ? value : JSON.parse(JSON.stringify(value)));
  for (const op of operations || []) {
    if (op.op === "add") put(op.path, op.value, true);
    else if (op.op === "replace") put(op.path, op.value, false);
    else if (op.op === "remove") remove(op.path);
    else if (op.op === "copy") put(op.path, copy(get(op.from)), true);
    else if (op.op === "move") {
      const value = get(op.from);
      remove(op.from);
      put(op.path, value, true);
    }
  }
  return root;
}
