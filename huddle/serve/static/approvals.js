// Approvals on the page: a paused run's pending tool calls as cards (agent, tool, arguments, why) with Approve,
// Deny (with a reason) and Edit (the arguments as JSON, checked before sending). Once every card of a pause has
// its decision they are sent together, so a run with several pending calls resumes once; the server's refusal
// (an edit it finds invalid) is shown on the cards and they can be decided again.
// Everything in a card came from a model or a tool: it is put on the page as text only.

import { element } from "./dom.js";

// One pending call, from either place the page learns of it: an AG-UI interrupt (RUN_FINISHED's outcome) or a
// saved turn's pending calls (GET /api/sessions/{id}), which carry the same facts at the top level.
function pendingCall(entry) {
  const facts = Object.assign({}, entry, entry.metadata || {});
  return {
    id: String(entry.id),
    toolCallId: entry.toolCallId || null,
    tool: String(facts.tool || "tool"),
    args: facts.args && typeof facts.args === "object" ? facts.args : {},
    agent: String(facts.agent || ""),
    stepId: facts.step_id,
    why: String(facts.why || facts.reason || entry.message || ""),
  };
}

// The pending calls of a finished AG-UI run: none unless its outcome is an interrupt for approvals.
export function interruptCalls(event) {
  const outcome = event.outcome || {};
  if (outcome.type !== "interrupt") return [];
  return (outcome.interrupts || []).filter((i) => !i.reason || i.reason === "approval").map(pendingCall);
}

// The pending calls of a saved turn that still waits for a person.
export function turnCalls(turn) {
  if (turn.status !== "awaiting_approval") return [];
  return (turn.pending || turn.interrupts || []).map(pendingCall);
}

// What the client sends back as one AG-UI resume entry.
function resumeEntry(call, payload) {
  return { interruptId: call.id, status: "resolved", payload };
}

// The arguments a person typed: a JSON object, or an error naming what is wrong (nothing is sent then).
function parseArgs(text) {
  let value;
  try {
    value = JSON.parse(text);
  } catch (error) {
    return { error: "The arguments are not valid JSON: " + error.message };
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    return { error: "The arguments must be a JSON object, such as {\"name\": \"value\"}." };
  }
  return { args: value };
}

function button(label, className, onClick) {
  const node = element("button", className, label);
  node.type = "button";
  node.addEventListener("click", onClick);
  return node;
}

// A card for one call; `decided(payload)` is called with its decision, `reset()` makes it undecided again.
function approvalCard(call, decided) {
  const card = element("div", "approval-card");
  card.dataset.callId = call.id;
  card.append(element("div", "approval-title", "Approval needed"));
  const facts = element("dl", "approval-facts");
  const fact = (name, value, className) => {
    facts.append(element("dt", "", name));
    facts.append(element("dd", className, value));
  };
  fact("Agent", call.agent, "approval-agent");
  fact("Tool", call.tool, "approval-tool");
  if (call.stepId) fact("Plan step", call.stepId, "approval-step");
  fact("Why", call.why, "approval-why");
  card.append(facts);
  card.append(element("pre", "approval-args", JSON.stringify(call.args, null, 2)));

  const actions = element("div", "approval-actions");
  const form = element("div", "approval-form");
  form.hidden = true;
  const error = element("p", "approval-error error");
  const outcome = element("p", "approval-outcome");

  const decide = (payload, summary) => {
    error.textContent = "";
    actions.hidden = true;
    form.hidden = true;
    outcome.textContent = summary;
    card.classList.add("decided", payload.action);
    decided(payload);
  };
  const openForm = (build) => {
    error.textContent = "";
    form.replaceChildren(...build());
    form.hidden = false;
    const field = form.querySelector("input, textarea");
    if (field) field.focus();
  };
  const cancel = () => button("Cancel", "approval-cancel", () => (form.hidden = true));

  const denyForm = () => {
    const reason = element("input", "approval-reason");
    reason.type = "text";
    reason.placeholder = "Why not? (the team is told)";
    reason.setAttribute("aria-label", "Reason for denying " + call.tool);
    const send = () => {
      const why = reason.value.trim() || "denied by the user";
      decide({ action: "deny", reason: why }, "Denied: " + why);
    };
    reason.addEventListener("keydown", (event) => {
      if (event.key === "Enter") send();
    });
    return [reason, button("Send denial", "approval-send-deny", send), cancel()];
  };
  const editForm = () => {
    const box = element("textarea", "approval-edit-args", JSON.stringify(call.args, null, 2));
    box.rows = Math.min(12, 2 + Object.keys(call.args).length);
    box.setAttribute("aria-label", "Arguments for " + call.tool);
    const send = () => {
      const parsed = parseArgs(box.value);
      if (parsed.error) error.textContent = parsed.error;
      else decide({ action: "edit", args: parsed.args }, "Run with: " + JSON.stringify(parsed.args));
    };
    return [box, button("Run with these arguments", "approval-send-edit", send), cancel()];
  };

  actions.append(
    button("Approve", "approval-approve", () => decide({ action: "approve" }, "Approved")),
    button("Deny", "approval-deny", () => openForm(denyForm)),
    button("Edit", "approval-edit", () => openForm(editForm)),
  );
  card.append(actions, form, error, outcome);

  const reset = (message) => {
    card.classList.remove("decided", "approve", "deny", "edit");
    actions.hidden = false;
    outcome.textContent = "";
    error.textContent = message || "";
  };
  return { card, reset };
}

// The cards of one pause. `resume(entries)` sends the decisions and resolves when the resumed run has been
// streamed; when it throws, its message is shown on every card and they wait for a decision again.
export function approvalGroup(calls, resume) {
  const group = element("div", "approvals");
  const decisions = new Map();
  const cards = [];
  const submit = async () => {
    if (decisions.size < calls.length) return;
    const entries = calls.map((call) => resumeEntry(call, decisions.get(call.id)));
    group.classList.add("sending");
    try {
      await resume(entries);
      group.classList.add("sent");
    } catch (error) {
      decisions.clear();
      for (const card of cards) card.reset(error.message);
    } finally {
      group.classList.remove("sending");
    }
  };
  for (const call of calls) {
    const card = approvalCard(call, (payload) => {
      decisions.set(call.id, payload);
      submit();
    });
    cards.push(card);
    group.append(card.card);
  }
  return group;
}

// A new message on a paused session cancels its paused turn: the cards whose decisions were not sent say so and
// can no longer be decided (the server would refuse the decision: nothing waits any more).
export function retireApprovals(root) {
  for (const card of root.querySelectorAll(".approvals:not(.sent) .approval-card:not(.retired)")) {
    card.classList.add("decided", "retired");
    for (const part of card.querySelectorAll(".approval-actions, .approval-form")) part.hidden = true;
    card.querySelector(".approval-error").textContent = "";
    card.querySelector(".approval-outcome").textContent = "Not run: a new message was sent instead";
  }
}
