// The agentapi web console: a client of the public API like any other.
// Everything the API returns is put on the page as text (textContent through el()), never as HTML:
// agent output is untrusted. The token lives in sessionStorage (this tab only, gone when it closes),
// never in localStorage or a cookie, and is sent in the Authorization header only.

const TOKEN_KEY = "agentapi.token";
const ADMIN_ROLES = ["admin", "owner", "superadmin"];
const TERMINAL_STATUSES = ["ended", "failed"];
const view = document.getElementById("view");
let leaving = []; // cleanups of the current page (open event streams, listeners)

// ---- helpers ---------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Terminal control characters shown as visible symbols, so an escape sequence cannot act on anything.
function printable(text) {
  return String(text ?? "").replace(/\x1b/g, "␛").replace(/[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/g, "�");
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function claims() {
  try {
    const part = token().split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part));
  } catch {
    return {};
  }
}

// For showing or hiding pages only: the API decides what a caller may do.
function identity() {
  const c = claims();
  const meta = c.app_metadata || {};
  const role = meta.superadmin === true ? "superadmin" : meta.role || c.role || "member";
  return { userId: c.sub, orgId: meta.org_id || c.org_id, role, admin: ADMIN_ROLES.includes(role) };
}

class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

async function api(path, { method = "GET", body, form } = {}) {
  const headers = { Authorization: `Bearer ${token()}` };
  let payload;
  if (form) payload = form;
  else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const response = await fetch(path, { method, headers, body: payload });
  if (response.status === 401) {
    signOut("Your token was refused (expired or invalid); sign in again.");
    throw new ApiError(401, { detail: "signed out" });
  }
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) throw new ApiError(response.status, data || {});
  return data;
}

function badge(status) {
  return el("span", { class: `badge badge-${status}`, dataset: { status } }, status);
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function errorBox(error) {
  return el("p", { class: "error", role: "alert" }, error instanceof Error ? error.message : String(error));
}

// A form's 422 errors, each beside its field (by name); the rest above the form.
function showFieldErrors(form, error) {
  for (const node of form.querySelectorAll(".field-error, .form-error")) node.remove();
  const errors = error instanceof ApiError && error.status === 422 ? error.problem.errors || [] : [];
  const general = [];
  for (const item of errors) {
    const name = String(item.field || "").replace(/^(body|data)\.?/, "");
    const input = name && form.querySelector(`[name="${CSS.escape(name)}"]`);
    if (input) input.after(el("span", { class: "field-error", dataset: { field: name } }, item.message));
    else general.push(item.message);
  }
  if (!errors.length || general.length) {
    const text = general.length ? `${error.message}: ${general.join("; ")}` : error.message;
    form.prepend(el("p", { class: "error form-error", role: "alert" }, text));
  }
}

function formValues(form) {
  return Object.fromEntries(new FormData(form).entries());
}

// ---- sign in ---------------------------------------------------------------------------------

function signOut(reason) {
  sessionStorage.removeItem(TOKEN_KEY);
  location.hash = "#/signin";
  if (reason) sessionStorage.setItem("agentapi.reason", reason);
}

async function signInWith(candidate) {
  sessionStorage.setItem(TOKEN_KEY, candidate);
  await api("/api/v1/sessions?limit=1");
}

// `agentapi dev` prints /console#login=CODE: the code is traded once for a token, then dropped from
// the address bar (it is a fragment, so it never reached a server log either).
async function redeemLoginLink() {
  const found = location.hash.match(/^#login=([A-Za-z0-9_-]+)$/);
  if (!found) return;
  history.replaceState(null, "", `${location.pathname}#/sessions`);
  const response = await fetch("/api/v1/console/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ code: found[1] }),
  });
  if (response.ok) sessionStorage.setItem(TOKEN_KEY, (await response.json()).token);
  else sessionStorage.setItem("agentapi.reason", "That sign-in link was used already or has expired.");
}

function signinPage() {
  const reason = sessionStorage.getItem("agentapi.reason");
  sessionStorage.removeItem("agentapi.reason");
  const form = el(
    "form",
    { id: "signin" },
    el("h1", {}, "Sign in"),
    reason && el("p", { class: "error" }, reason),
    el("label", { for: "token" }, "Access token (JWT)"),
    el("textarea", { id: "token", name: "token", required: true, autocomplete: "off", spellcheck: "false" }),
    el("p", { class: "muted" }, "The token stays in this tab only and is sent as a bearer header."),
    el("button", { class: "primary", type: "submit" }, "Sign in"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await signInWith(form.token.value.trim());
      location.hash = "#/sessions";
    } catch (error) {
      sessionStorage.removeItem(TOKEN_KEY);
      showFieldErrors(form, error);
    }
  });
  return form;
}

// ---- sessions --------------------------------------------------------------------------------

function sessionsPage() {
  const rows = el("tbody");
  const more = el("button", { type: "button", id: "more", hidden: true }, "More");
  const problem = el("div");
  let cursor = null;

  async function load() {
    try {
      const page = await api(`/api/v1/sessions?limit=20${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
      for (const session of page.sessions) rows.append(sessionRow(session));
      cursor = page.next_cursor;
      more.hidden = !cursor;
    } catch (error) {
      problem.replaceChildren(errorBox(error));
    }
  }

  function sessionRow(session) {
    const status = el("td", {}, badge(session.status));
    if (session.end_reason) status.append(" ", el("span", { class: "muted reason" }, session.end_reason));
    const stop = el("button", { type: "button", class: "danger stop" }, "Stop");
    stop.addEventListener("click", async () => {
      stop.disabled = true;
      try {
        await api(`/api/v1/sessions/${session.id}`, { method: "DELETE" });
        stop.replaceWith(el("span", { class: "muted" }, "stopping…"));
      } catch (error) {
        stop.after(errorBox(error));
      }
    });
    return el(
      "tr",
      { dataset: { session: session.id } },
      el("td", {}, el("a", { href: `#/chat/${session.id}` }, session.title || session.id.slice(0, 8))),
      el("td", {}, session.agent_type),
      status,
      el("td", {}, when(session.created_at)),
      el("td", {}, TERMINAL_STATUSES.includes(session.status) ? "" : stop),
    );
  }

  more.addEventListener("click", load);
  load();
  return el(
    "section",
    { id: "sessions" },
    el("div", { class: "row" }, el("h1", {}, "Sessions"), el("a", { href: "#/new" }, "New session")),
    problem,
    el(
      "table",
      {},
      el("thead", {}, el("tr", {}, ["Session", "Agent", "Status", "Started", ""].map((h) => el("th", {}, h)))),
      rows,
    ),
    more,
  );
}

// ---- new session -----------------------------------------------------------------------------

function newSessionPage() {
  const choices = el("div", { class: "agents" }, el("p", { class: "muted" }, "Loading agent types…"));
  const custom = el("select", { name: "custom_agent", id: "custom_agent" });
  const customRow = el("div", { hidden: true }, el("label", { for: "custom_agent" }, "Command"), custom);
  const form = el(
    "form",
    { id: "new-session" },
    el("h1", {}, "New session"),
    el("label", {}, "Agent"),
    choices,
    customRow,
    el("label", { for: "title" }, "Title (optional)"),
    el("input", { id: "title", name: "title", maxlength: 200 }),
    el("label", { for: "prompt" }, "First prompt (optional)"),
    el("textarea", { id: "prompt", name: "prompt" }),
    el("p", {}, el("button", { class: "primary", type: "submit" }, "Start")),
  );

  api("/api/v1/agents")
    .then(({ agents }) => {
      choices.replaceChildren(
        ...agents.map((agent) => {
          const usable = agent.installed && agent.configured;
          const why = !agent.installed ? "not installed here" : agent.needs.length ? `needs ${agent.needs.join(", ")}` : "";
          const radio = el("input", {
            type: "radio",
            name: "agent_type",
            value: agent.type,
            disabled: !usable,
            required: true,
            dataset: { customAgents: JSON.stringify(agent.custom_agents) },
          });
          return el("label", {}, radio, el("strong", {}, agent.label), el("code", {}, agent.type), why && el("span", { class: "muted" }, why));
        }),
      );
      const first = choices.querySelector("input:not(:disabled)");
      if (first) first.checked = true;
      pick();
    })
    .catch((error) => choices.replaceChildren(errorBox(error)));

  function pick() {
    const chosen = choices.querySelector("input:checked");
    const names = chosen ? JSON.parse(chosen.dataset.customAgents) : [];
    customRow.hidden = !(chosen && chosen.value === "custom");
    custom.replaceChildren(...names.map((name) => el("option", { value: name }, name)));
  }
  choices.addEventListener("change", pick);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const values = formValues(form);
    const body = { agent_type: values.agent_type };
    if (values.agent_type === "custom") body.custom_agent = values.custom_agent;
    if (values.title) body.title = values.title;
    if (values.prompt) body.prompt = values.prompt;
    try {
      const session = await api("/api/v1/sessions", { method: "POST", body });
      location.hash = `#/chat/${session.id}`;
    } catch (error) {
      showFieldErrors(form, error);
    }
  });
  return form;
}

// ---- chat ------------------------------------------------------------------------------------

// A session's SSE stream read with fetch (EventSource cannot send an Authorization header), resumed
// with Last-Event-ID after a dropped connection for as long as the page is open.
function followEvents(sessionId, onEvent, onConnection) {
  const stop = new AbortController();
  let lastId = null;
  let retry = 2000;
  (async () => {
    while (!stop.signal.aborted) {
      try {
        const headers = { Authorization: `Bearer ${token()}`, Accept: "text/event-stream" };
        if (lastId) headers["Last-Event-ID"] = lastId;
        const response = await fetch(`/api/v1/sessions/${sessionId}/events`, { headers, signal: stop.signal });
        if (response.status === 401) return signOut("Your token was refused; sign in again.");
        if (!response.ok) throw new Error(`events: HTTP ${response.status}`);
        onConnection("live");
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value.replace(/\r\n?/g, "\n");
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const frame = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            let id = null;
            let name = "message";
            const data = [];
            for (const line of frame.split("\n")) {
              const colon = line.indexOf(":");
              if (colon === 0) continue; // comment (heartbeat)
              const field = colon < 0 ? line : line.slice(0, colon);
              const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
              if (field === "id") id = text;
              else if (field === "event") name = text;
              else if (field === "data") data.push(text);
              else if (field === "retry" && /^\d+$/.test(text)) retry = Number(text);
            }
            if (data.length) {
              onEvent(name, JSON.parse(data.join("\n")));
              if (id) lastId = id;
            }
          }
        }
      } catch (error) {
        if (stop.signal.aborted) return;
      }
      onConnection("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, retry));
    }
  })();
  return () => stop.abort();
}

const RAW_KEYS = [
  ["Esc", "\x1b"],
  ["Ctrl-C", "\x03"],
  ["↑", "\x1b[A"],
  ["↓", "\x1b[B"],
  ["←", "\x1b[D"],
  ["→", "\x1b[C"],
  ["Enter", "\r"],
];

function chatPage(sessionId) {
  const title = el("h1", {}, "Session");
  const status = el("span", { id: "agent-status" }, badge("starting"));
  const connection = el("span", { id: "connection", class: "muted" }, "connecting…");
  const messages = el("div", { class: "messages", id: "messages" });
  const byId = new Map();
  const tools = el("ul", { id: "tool-calls" });
  const toolsById = new Map();
  const input = el("textarea", { id: "message", name: "content", placeholder: "Message the agent" });
  const send = el("button", { class: "primary", type: "submit", id: "send" }, "Send");
  const why = el("p", { id: "send-reason", class: "muted" });
  const problem = el("div");
  let ended = false;

  function setStatus(value, reason) {
    status.replaceChildren(badge(value));
    if (reason) status.append(" ", el("span", { class: "muted reason" }, reason));
    const busy = value === "running" || value === "starting" || value === "requested";
    send.disabled = ended || busy;
    input.disabled = ended;
    why.textContent = ended
      ? "The session has ended."
      : busy
        ? "The agent is working: wait until it is stable, or interrupt it with Esc or Ctrl-C below."
        : "";
  }

  function upsert(message) {
    let node = byId.get(message.id);
    if (!node) {
      node = el("div", { class: `message ${message.role}`, dataset: { id: message.id } });
      byId.set(message.id, node);
      const later = [...byId.keys()].filter((id) => id > message.id).sort((a, b) => a - b)[0];
      if (later === undefined) messages.append(node);
      else messages.insertBefore(node, byId.get(later));
    }
    node.replaceChildren(el("div", { class: "who" }, message.role), el("pre", {}, printable(message.content)));
  }

  function toolCall(data) {
    const label = `${data.tool ?? "tool"} · ${data.type.replace("tool_call.", "")}`;
    const detail = data.error ? `: ${data.error}` : "";
    const node = toolsById.get(data.call_id) || el("li");
    node.textContent = printable(label + detail);
    if (!toolsById.has(data.call_id)) {
      toolsById.set(data.call_id, node);
      tools.append(node);
    }
  }

  function onEvent(name, data) {
    if (name === "message_update") upsert({ id: data.id, role: data.role, content: data.message });
    else if (name === "status_change" && !ended) setStatus(data.status);
    else if (name === "session_ended") {
      ended = true;
      setStatus(data.type === "session.failed" ? "failed" : "ended", data.reason);
    } else if (name === "tool_call") toolCall(data);
  }

  const form = el("form", { id: "send-form" }, input, el("div", { class: "row" }, send), why);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const content = input.value.trim();
    if (!content) return;
    send.disabled = true;
    try {
      await api(`/api/v1/sessions/${sessionId}/message`, { method: "POST", body: { content, type: "user" } });
      input.value = "";
      problem.replaceChildren();
    } catch (error) {
      problem.replaceChildren(errorBox(error));
      send.disabled = false;
    }
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !send.disabled) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  const keys = el(
    "div",
    { class: "row keys", id: "raw-keys" },
    el("span", { class: "muted" }, "Keys:"),
    RAW_KEYS.map(([label, bytes]) =>
      el("button", {
        type: "button",
        onclick: async () => {
          try {
            await api(`/api/v1/sessions/${sessionId}/message`, { method: "POST", body: { content: bytes, type: "raw" } });
          } catch (error) {
            problem.replaceChildren(errorBox(error));
          }
        },
      }, label),
    ),
  );

  const file = el("input", { type: "file", id: "upload-file", name: "file" });
  const uploaded = el("span", { id: "uploaded", class: "muted" });
  const upload = el("form", { class: "row", id: "upload" }, file, el("button", { type: "submit" }, "Upload"), uploaded);
  upload.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!file.files.length) return;
    const body = new FormData();
    body.append("file", file.files[0]);
    try {
      const answer = await api(`/api/v1/sessions/${sessionId}/upload`, { method: "POST", form: body });
      uploaded.textContent = `uploaded to ${answer.filePath}`;
    } catch (error) {
      uploaded.textContent = error.message;
    }
  });

  (async () => {
    try {
      const session = await api(`/api/v1/sessions/${sessionId}`);
      title.textContent = session.title || `${session.agent_type} session`;
      ended = TERMINAL_STATUSES.includes(session.status);
      setStatus(session.status, session.end_reason);
      // The stored conversation first (the event log is capped), then the log's replay and live
      // events update the same messages by id: nothing twice, nothing missing.
      const stored = await api(`/api/v1/sessions/${sessionId}/messages`);
      for (const message of stored.messages) upsert(message);
      leaving.push(followEvents(sessionId, onEvent, (state) => (connection.textContent = state)));
    } catch (error) {
      problem.replaceChildren(errorBox(error));
    }
  })();

  return el(
    "section",
    { id: "chat", dataset: { session: sessionId } },
    el("div", { class: "row" }, title, status, connection),
    messages,
    problem,
    form,
    keys,
    el("h2", {}, "Files"),
    upload,
    el("h2", {}, "Tool calls"),
    tools,
  );
}

// ---- routing ---------------------------------------------------------------------------------

const PAGES = [
  [/^#\/sessions$/, sessionsPage],
  [/^#\/new$/, newSessionPage],
  [/^#\/chat\/([0-9a-f-]{36})$/, chatPage],
];

function render() {
  for (const cleanup of leaving) cleanup();
  leaving = [];
  const signedIn = Boolean(token());
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("nav-admin").hidden = !(signedIn && identity().admin);
  if (!signedIn) {
    view.replaceChildren(signinPage());
    return;
  }
  for (const [pattern, page] of PAGES) {
    const found = location.hash.match(pattern);
    if (found) {
      view.replaceChildren(page(...found.slice(1)));
      return;
    }
  }
  location.replace("#/sessions");
}

document.getElementById("sign-out").addEventListener("click", () => signOut());
window.addEventListener("hashchange", render);
await redeemLoginLink();
render();
