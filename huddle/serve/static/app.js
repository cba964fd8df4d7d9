// The huddle chat page: a team's AG-UI stream (POST /agui/{team}) shown as a conversation, with the plan, the
// manager's decisions, tool calls, a live meter, each run's trace (GET /api/...) and the tool calls that wait
// for a person's approval (approvals.js), whose decisions resume the run in the same conversation.
// Everything a model, tool or memory wrote is data: it is put on the page with textContent, never as markup.

import { applyPatch, readEvents } from "./agui.js";
import { approvalGroup, interruptCalls, retireApprovals, turnCalls } from "./approvals.js";
import { element, money } from "./dom.js";
import { traceTree } from "./trace.js";

const KEY_STORAGE = "huddle.apiKey";

const page = {
  team: () => document.getElementById("team"),
  transcript: () => document.getElementById("transcript"),
  status: () => document.getElementById("status"),
};

const current = {
  sessionId: null, // the session the next message continues (AG-UI threadId); null: a new one
  state: {}, // the run's AG-UI state: plan, meter, speaker, decisions
  runId: null, // the run being streamed (its trace, when it ends)
  speaker: "", // who writes what follows (labels tool calls)
  messages: new Map(), // AG-UI messageId -> the element its text goes in
  tools: new Map(), // toolCallId -> {card, args}
  running: false,
  failure: null, // the RUN_ERROR message of the run being streamed, if it ended with one
};

class ApiError extends Error {}

// --- small helpers -------------------------------------------------------------------------------------------

function randomId() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function asText(value) {
  if (typeof value === "string") return value;
  if (Array.isArray(value)) return value.map((part) => (part && part.text) || asText(part)).join("");
  return JSON.stringify(value);
}

function prettyArgs(text) {
  try {
    return JSON.stringify(JSON.parse(text));
  } catch {
    return text;
  }
}

function setStatus(text, isError) {
  const status = page.status();
  status.textContent = text || "";
  status.classList.toggle("error", Boolean(isError));
}

function scrollDown() {
  const transcript = page.transcript();
  transcript.scrollTop = transcript.scrollHeight;
}

// --- the API: a bearer key when the server wants one ----------------------------------------------------------

function headers(extra) {
  const all = Object.assign({ Accept: "application/json" }, extra || {});
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) all.Authorization = "Bearer " + key;
  return all;
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    const error = body.error;
    if (error && typeof error === "object" && error.message) return error.message;
    return String(error || body.message || body.detail || response.statusText);
  } catch {
    return response.status + " " + response.statusText;
  }
}

async function request(path, options) {
  const response = await fetch(path, Object.assign({}, options, { headers: headers(options && options.headers) }));
  if (response.status === 401) {
    document.getElementById("key-form").hidden = false;
    throw new ApiError("This server needs an API key: enter it above. (" + (await errorMessage(response)) + ")");
  }
  if (!response.ok) throw new ApiError(await errorMessage(response));
  return response;
}

async function getJson(path) {
  return (await request(path)).json();
}

// --- the meter and the budget bar ---------------------------------------------------------------------------

function renderMeter(meter) {
  if (!meter) return;
  const tokens = Number(meter.prompt_tokens || 0) + Number(meter.completion_tokens || 0);
  document.getElementById("meter-calls").textContent = (meter.calls || 0) + " calls";
  document.getElementById("meter-tokens").textContent = tokens + " tokens";
  document.getElementById("meter-cost").textContent = money(meter.cost_usd);
  const fill = document.getElementById("budget-fill");
  const label = document.getElementById("budget-label");
  if (meter.max_usd) {
    const share = Math.min(1, Number(meter.cost_usd || 0) / Number(meter.max_usd));
    fill.style.width = (share * 100).toFixed(1) + "%";
    fill.classList.toggle("high", share >= 0.8);
    label.textContent = Math.round(share * 100) + "% of " + money(meter.max_usd);
  } else {
    fill.style.width = "0";
    label.textContent = "no budget";
  }
}

// --- the plan and the decisions ---------------------------------------------------------------------------

function renderPlan(plan) {
  const list = document.getElementById("plan");
  list.replaceChildren();
  document.getElementById("plan-goal").textContent = (plan && plan.goal) || "";
  for (const step of (plan && plan.steps) || []) {
    const status = step.status || "planned";
    const item = element("li", "step " + status);
    item.append(element("span", "step-status", status));
    item.append(element("span", "step-who", step.assignee || ""));
    item.append(element("span", "step-what", step.instruction || ""));
    if (step.tool) item.append(element("code", "step-tool", step.tool + " " + (step.args || "")));
    list.append(item);
  }
}

function renderDecisions(decisions) {
  const list = document.getElementById("decisions");
  list.replaceChildren();
  for (const decision of decisions || []) {
    const item = element("li", "decision");
    item.append(element("span", "decision-speaker", decision.speaker || ""));
    item.append(element("span", "decision-policy", decision.policy || ""));
    if (decision.reason) item.append(element("span", "decision-reason", decision.reason));
    list.append(item);
  }
}

function renderState() {
  const state = current.state || {};
  renderPlan(state.plan);
  renderDecisions(state.decisions);
  renderMeter(state.meter);
}

// --- the transcript --------------------------------------------------------------------------------------------

function addMessage(speaker, text, className) {
  const message = element("div", "message " + (className || ""));
  message.append(element("div", "speaker", speaker));
  const body = element("div", "text", text || "");
  message.append(body);
  page.transcript().append(message);
  scrollDown();
  return body;
}

function addToolCard(speaker, name, args, result) {
  const card = element("div", "tool-call");
  card.append(element("div", "speaker", speaker));
  card.append(element("div", "tool-name", name));
  const argsNode = element("code", "tool-args", args || "");
  card.append(argsNode);
  const resultNode = element("div", "tool-result", result || "");
  card.append(resultNode);
  page.transcript().append(card);
  scrollDown();
  return { card, argsNode, resultNode, args: "" };
}

function addRunFooter(runId, stopReason) {
  const footer = element("div", "run-footer");
  if (stopReason) footer.append(element("span", "stop-reason", stopReason));
  if (runId) {
    const button = element("button", "trace-button", "trace " + runId);
    button.type = "button";
    button.addEventListener("click", () => showTrace(runId));
    footer.append(button);
  }
  page.transcript().append(footer);
  scrollDown();
}

function lastMessageText() {
  const texts = page.transcript().querySelectorAll(".message .text");
  return texts.length ? texts[texts.length - 1].textContent : "";
}

// --- one AG-UI event at a time -------------------------------------------------------------------------------

const handlers = {
  RUN_STARTED(event) {
    current.sessionId = event.threadId || current.sessionId;
    current.runId = event.runId;
    showSessionLabel();
  },
  CUSTOM(event) {
    const value = event.value || {};
    if (event.name === "huddle.speaker") current.speaker = value.name || "";
    else if (event.name === "huddle.text_reset") {
      const body = current.messages.get(value.messageId); // a retry writes the message again from the start
      if (body) body.textContent = "";
    }
  },
  TEXT_MESSAGE_START(event) {
    const speaker = event.name || current.speaker || "assistant";
    if (event.role === "user") {
      current.messages.set(event.messageId, null); // the question: already shown as it was sent
      return;
    }
    current.messages.set(event.messageId, addMessage(speaker, "", "streaming"));
  },
  TEXT_MESSAGE_CONTENT(event) {
    if (!current.messages.has(event.messageId)) handlers.TEXT_MESSAGE_START(event);
    const body = current.messages.get(event.messageId);
    if (!body) return;
    body.textContent += event.delta || "";
    scrollDown();
  },
  TEXT_MESSAGE_END(event) {
    const body = current.messages.get(event.messageId);
    if (body) body.parentElement.classList.remove("streaming");
  },
  TOOL_CALL_START(event) {
    if (current.tools.has(event.toolCallId)) return; // a resumed run naming the call it paused on
    current.tools.set(event.toolCallId, addToolCard(current.speaker || "tools", event.toolCallName, "", ""));
  },
  TOOL_CALL_ARGS(event) {
    const tool = current.tools.get(event.toolCallId);
    if (!tool) return;
    tool.args += event.delta || "";
    tool.argsNode.textContent = tool.args;
  },
  TOOL_CALL_END(event) {
    const tool = current.tools.get(event.toolCallId);
    if (tool) tool.argsNode.textContent = prettyArgs(tool.args);
  },
  TOOL_CALL_RESULT(event) {
    const tool = current.tools.get(event.toolCallId) || addToolCard(current.speaker || "tools", "tool", "", "");
    tool.resultNode.textContent = asText(event.content);
  },
  STATE_SNAPSHOT(event) {
    current.state = event.snapshot || {};
    renderState();
  },
  STATE_DELTA(event) {
    current.state = applyPatch(current.state || {}, event.delta);
    renderState();
  },
  RUN_FINISHED(event) {
    const result = event.result || {};
    const pending = interruptCalls(event);
    const stop = result.stop_reason || (pending.length ? "awaiting_approval" : "");
    if (!result.answer && stop.startsWith("error")) setStatus(stop, true);
    else if (result.answer && lastMessageText() !== result.answer) addMessage("answer", result.answer, "answer");
    current.sessionId = result.session_id || event.threadId || current.sessionId;
    if (pending.length) showApprovals(pending);
    addRunFooter(result.run_id || current.runId, stop);
  },
  RUN_ERROR(event) {
    current.failure = (event.code ? event.code + ": " : "") + (event.message || "the run failed");
    setStatus(current.failure, true);
    addRunFooter(current.runId, "no answer");
  },
};

function handle(event) {
  const handler = handlers[event.type];
  if (handler) handler(event);
}

// --- sending a message, resuming a paused run -------------------------------------------------------------------

// One AG-UI run: POST the RunAgentInput, stream its events onto the page. A refusal before the stream (an HTTP
// error) is thrown as an ApiError for the caller to show where it belongs.
async function stream(team, threadId, extra) {
  current.running = true;
  current.failure = null;
  document.getElementById("send").disabled = true;
  setStatus("The team is working...");
  current.messages.clear();
  current.runId = null;
  current.speaker = "";
  current.state = {};
  const body = Object.assign(
    { threadId, runId: randomId(), messages: [], state: {}, tools: [], context: [], forwardedProps: {} },
    extra,
  );
  try {
    const response = await request("/agui/" + encodeURIComponent(team), {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify(body),
    });
    current.sessionId = threadId;
    showSessionLabel();
    await readEvents(response, handle);
    if (!page.status().classList.contains("error")) setStatus("");
  } catch (error) {
    setStatus("");
    throw error instanceof ApiError ? error : new ApiError("The connection to the server failed: " + error);
  } finally {
    current.running = false;
    document.getElementById("send").disabled = false;
    loadSessions();
  }
}

async function send(text) {
  if (current.running || !text.trim()) return;
  current.tools.clear();
  retireApprovals(page.transcript());
  addMessage("you", text, "user");
  try {
    const message = { id: randomId(), role: "user", content: text };
    await stream(page.team().value, current.sessionId || randomId(), { messages: [message] });
  } catch (error) {
    setStatus(error.message, true);
  }
}

// The pending calls of the run that just paused (or of a reopened session's paused turn) as approval cards; the
// decisions resume that session's run, which streams on below them. A resumed run that failed while its turn
// still waits (the tool refused the edited arguments) gives the cards back, with the error, to decide again.
function showApprovals(calls) {
  const sessionId = current.sessionId;
  const team = page.team().value;
  for (const call of calls) {
    // The stream showed the waiting call as a tool call with no result: its approval card takes its place.
    const tool = current.tools.get(call.toolCallId);
    if (tool && !tool.resultNode.textContent) tool.card.remove();
    current.tools.delete(call.toolCallId);
  }
  const group = approvalGroup(calls, async (entries) => {
    if (current.running) throw new ApiError("Wait for the run that is going on to finish, then decide again.");
    await stream(team, sessionId, { resume: entries });
    if (!current.failure) return;
    const turns = await getJson("/api/sessions/" + encodeURIComponent(sessionId));
    const last = turns[turns.length - 1];
    if (last && last.status === "awaiting_approval") throw new ApiError(current.failure);
  });
  page.transcript().append(group);
  scrollDown();
}

// --- sessions: list, reopen ---------------------------------------------------------------------------------

function showSessionLabel() {
  document.getElementById("session-label").textContent = current.sessionId
    ? "Session " + current.sessionId
    : "New session";
  for (const item of document.querySelectorAll("#sessions li")) {
    item.classList.toggle("selected", item.dataset.id === current.sessionId);
  }
}

async function loadSessions() {
  try {
    const sessions = await getJson("/api/sessions");
    const list = document.getElementById("sessions");
    list.replaceChildren();
    for (const session of sessions) {
      const item = element("li", "session");
      item.dataset.id = session.id;
      const button = element("button", "session-open");
      button.type = "button";
      button.append(element("span", "session-team", session.team));
      button.append(element("span", "session-id", session.id.slice(0, 12)));
      const when = session.updated ? new Date(session.updated * 1000).toLocaleString() : "";
      const turns = session.turns || 0;
      button.append(element("span", "session-meta", turns + (turns === 1 ? " turn, " : " turns, ") + when));
      button.addEventListener("click", () => openSession(session));
      item.append(button);
      list.append(item);
    }
    showSessionLabel();
  } catch (error) {
    setStatus(error.message, true);
  }
}

function turnMessages(turn) {
  addMessage("you", turn.task, "user");
  const said = (turn.messages || []).filter((m) => m.source !== "user" && m.source !== "system");
  for (const message of said) addMessage(message.source, asText(message.content));
  if (turn.answer && lastMessageText() !== turn.answer) addMessage("answer", turn.answer, "answer");
  if (turn.error) addMessage("error", turn.error, "failed");
  const pending = turnCalls(turn);
  if (pending.length) showApprovals(pending);
  addRunFooter(turn.run_id, turn.status);
}

async function openSession(session) {
  if (current.running) return;
  try {
    const turns = await getJson("/api/sessions/" + encodeURIComponent(session.id));
    page.transcript().replaceChildren();
    current.sessionId = session.id;
    current.tools.clear();
    page.team().value = session.team;
    turns.forEach(turnMessages);
    const last = turns[turns.length - 1];
    current.state = { plan: last && last.plan, decisions: last && last.decisions };
    renderState();
    showSessionLabel();
    setStatus("");
  } catch (error) {
    setStatus(error.message, true);
  }
}

function newSession() {
  if (current.running) return;
  current.sessionId = null;
  current.state = {};
  page.transcript().replaceChildren();
  renderState();
  showSessionLabel();
}

// --- the trace tree ----------------------------------------------------------------------------------------------

async function showTrace(runId) {
  const tree = document.getElementById("trace");
  document.getElementById("trace-label").textContent = "Run " + runId;
  tree.replaceChildren();
  try {
    tree.append(traceTree(await getJson("/api/runs/" + encodeURIComponent(runId) + "/trace")));
  } catch (error) {
    tree.append(element("p", "error", error.message));
  }
}

// --- start ---------------------------------------------------------------------------------------------------

async function loadTeams() {
  const select = page.team();
  try {
    const teams = await getJson("/api/teams");
    select.replaceChildren();
    for (const team of teams) {
      const option = element("option", "", team.name);
      option.value = team.name;
      option.title = team.description || "";
      select.append(option);
    }
    return true;
  } catch (error) {
    setStatus(error.message, true);
    return false;
  }
}

async function start() {
  document.getElementById("ask").addEventListener("submit", (event) => {
    event.preventDefault();
    const box = document.getElementById("message");
    const text = box.value;
    box.value = "";
    send(text);
  });
  document.getElementById("message").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      document.getElementById("ask").requestSubmit();
    }
  });
  document.getElementById("new-session").addEventListener("click", newSession);
  document.getElementById("key-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, document.getElementById("key").value.trim());
    document.getElementById("key").value = "";
    if (await loadTeams()) {
      document.getElementById("key-form").hidden = true;
      setStatus("");
      loadSessions();
    }
  });
  renderState();
  if (await loadTeams()) loadSessions();
}

start();
