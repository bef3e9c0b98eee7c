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

// What shows an error in `box` (in place of the one before).
function errorsIn(box) {
  return (error) => box.replaceChildren(errorBox(error));
}

// A form's 422 errors, each beside its field (by name); the rest above the form.
function showFieldErrors(form, error) {
  for (const node of form.querySelectorAll(".field-error, .form-error")) node.remove();
  if (!error) return;
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

// Submitting `form` POSTs `body(its values, the form)` to `path`: then the form is reset and
// `done(answer)` runs, or the API's errors are shown beside the fields.
function postForm(form, path, body, done) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const answer = await api(path, { method: "POST", body: body(formValues(form), form) });
      form.reset();
      showFieldErrors(form, null);
      done(answer);
    } catch (error) {
      showFieldErrors(form, error);
    }
  });
}

// A table with a heading row above `rows` (a tbody the page fills).
function table(headings, rows) {
  return el("table", {}, el("thead", {}, el("tr", {}, headings.map((h) => el("th", {}, h)))), rows);
}

// Fills `rows` with `row(item)` for each item `items` picks out of what `path` answers. Whether it
// could: an error goes to `failed` instead.
async function fillRows(rows, path, items, row, failed) {
  try {
    rows.replaceChildren(...items(await api(path)).map(row));
    return true;
  } catch (error) {
    failed(error);
    return false;
  }
}

// A button that DELETEs `path`, then runs `done()`; an error goes to `failed`.
function deleteButton(label, path, done, failed, classes = "danger") {
  const button = el("button", { type: "button", class: classes }, label);
  button.addEventListener("click", async () => {
    try {
      await api(path, { method: "DELETE" });
      done();
    } catch (error) {
      failed(error);
    }
  });
  return button;
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
    table(["Session", "Agent", "Status", "Started", ""], rows),
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
  const stop = el("button", { type: "button", class: "danger", id: "stop" }, "Stop");
  let ended = false;

  function setStatus(value, reason) {
    status.replaceChildren(badge(value));
    if (reason) status.append(" ", el("span", { class: "muted reason" }, reason));
    const busy = value === "running" || value === "starting" || value === "requested";
    send.disabled = ended || busy;
    input.disabled = ended;
    stop.hidden = ended;
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

  stop.addEventListener("click", async () => {
    stop.disabled = true;
    try {
      await api(`/api/v1/sessions/${sessionId}`, { method: "DELETE" });
    } catch (error) {
      problem.replaceChildren(errorBox(error));
      stop.disabled = false;
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
      // The session and its stored conversation at once (the event log is capped), then the log's
      // replay and live events update the same messages by id: nothing twice, nothing missing.
      const [session, stored] = await Promise.all([
        api(`/api/v1/sessions/${sessionId}`),
        api(`/api/v1/sessions/${sessionId}/messages`),
      ]);
      title.textContent = session.title || `${session.agent_type} session`;
      ended = TERMINAL_STATUSES.includes(session.status);
      setStatus(session.status, session.end_reason);
      for (const message of stored.messages) upsert(message);
      leaving.push(followEvents(sessionId, onEvent, (state) => (connection.textContent = state)));
    } catch (error) {
      problem.replaceChildren(errorBox(error));
    }
  })();

  return el(
    "section",
    { id: "chat", dataset: { session: sessionId } },
    el("div", { class: "row" }, title, status, connection, stop),
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

// ---- MCP servers -----------------------------------------------------------------------------

function mcpPage() {
  const rows = el("tbody");
  const problem = el("div");
  const transport = el(
    "select",
    { id: "mcp-transport", name: "transport" },
    ["http", "sse", "stdio"].map((value) => el("option", { value }, value)),
  );
  const auth = el(
    "select",
    { id: "mcp-auth", name: "auth_type" },
    ["none", "bearer", "oauth"].map((value) => el("option", { value }, value)),
  );
  const form = el(
    "form",
    { id: "mcp-add" },
    el("h2", {}, "Add a server"),
    el("label", { for: "mcp-name" }, "Name"),
    el("input", { id: "mcp-name", name: "name", required: true }),
    el("label", { for: "mcp-scope" }, "Scope"),
    el(
      "select",
      { id: "mcp-scope", name: "scope" },
      el("option", { value: "user" }, "just me"),
      identity().admin && el("option", { value: "organization" }, "the whole organization"),
    ),
    el("label", { for: "mcp-transport" }, "Transport"),
    transport,
    el("label", { for: "mcp-endpoint" }, "Endpoint URL (http, sse)"),
    el("input", { id: "mcp-endpoint", name: "endpoint_url" }),
    el("label", { for: "mcp-command" }, "Command (stdio)"),
    el("input", { id: "mcp-command", name: "command" }),
    el("label", { for: "mcp-args" }, "Arguments (stdio, one per line)"),
    el("textarea", { id: "mcp-args", name: "args" }),
    el("label", { for: "mcp-auth" }, "Authentication"),
    auth,
    el("label", { for: "mcp-bearer" }, "Bearer token (write-only)"),
    el("input", { id: "mcp-bearer", name: "bearer_token", type: "password", autocomplete: "off" }),
    el("p", {}, el("button", { class: "primary", type: "submit" }, "Add")),
  );

  async function load() {
    await fillRows(rows, "/api/v1/mcp/configurations?limit=100", (page) => page.configurations, configRow, errorsIn(problem));
  }

  function configRow(config) {
    const result = el("span", { class: "muted result" });
    const actions = el("td", { class: "row" });
    const test = el("button", { type: "button", class: "test" }, "Test");
    test.addEventListener("click", async () => {
      result.textContent = "testing…";
      try {
        const answer = await api("/api/v1/mcp/test", { method: "POST", body: { config_id: config.id } });
        const outcome = answer.result;
        if (!outcome) result.textContent = "sent; the tools worker has not answered yet";
        else if (outcome.ok) result.textContent = printable(`${outcome.tools.length} tools: ${outcome.tools.map((t) => t.name ?? t).join(", ")}`);
        else result.textContent = printable(`failed: ${outcome.error || outcome.message || "unknown error"}`);
      } catch (error) {
        result.textContent = error.message;
      }
    });
    actions.append(test);
    if (config.auth_type === "oauth") {
      const connect = el("button", { type: "button", class: "connect" }, "Connect");
      connect.addEventListener("click", () => startOAuth(config.id, result));
      actions.append(connect);
    }
    const remove = deleteButton(
      "Delete",
      `/api/v1/mcp/configurations/${config.id}`,
      load,
      (error) => (result.textContent = error.message),
      "danger delete",
    );
    actions.append(remove, result);
    return el(
      "tr",
      { dataset: { config: config.id, name: config.name } },
      el("td", {}, config.name),
      el("td", {}, config.scope),
      el("td", {}, config.transport, " ", el("span", { class: "muted" }, config.endpoint_url || config.command || "")),
      el("td", {}, config.auth_type, " ", config.connection && badge(config.connection)),
      actions,
    );
  }

  // The authorization server's pages run in a popup; the platform's callback page posts
  // {type: "oauth_success"} back here. The popup is opened at once, inside the click, so no popup
  // blocker stops it, and sent to the authorization URL once the API has made one.
  async function startOAuth(configId, result) {
    const popup = window.open("about:blank", "mcp-oauth", "popup,width=560,height=680");
    try {
      const init = await api("/api/v1/mcp/oauth/init", { method: "POST", body: { mcp_configuration_id: configId } });
      if (popup) popup.location.href = init.authorization_url;
      else result.textContent = "Allow pop-ups for this page to connect.";
    } catch (error) {
      if (popup) popup.close();
      result.textContent = error.message;
    }
  }

  function onMessage(event) {
    if (event.origin !== location.origin || event.data?.type !== "oauth_success") return;
    load();
  }
  window.addEventListener("message", onMessage);
  leaving.push(() => window.removeEventListener("message", onMessage));

  postForm(
    form,
    "/api/v1/mcp/configurations",
    (values) => {
      const body = { name: values.name, scope: values.scope, transport: values.transport, auth_type: values.auth_type };
      if (values.transport === "stdio") {
        body.command = values.command;
        body.args = values.args.split("\n").map((line) => line.trim()).filter(Boolean);
      } else body.endpoint_url = values.endpoint_url;
      if (values.auth_type === "bearer") body.bearer_token = values.bearer_token;
      return body;
    },
    load,
  );

  load();
  return el(
    "section",
    { id: "mcp" },
    el("h1", {}, "MCP servers"),
    problem,
    table(["Name", "Scope", "Transport", "Auth", ""], rows),
    form,
  );
}

// ---- prompts ---------------------------------------------------------------------------------

function promptsPage() {
  const rows = el("tbody");
  const problem = el("div");
  const agent = el("select", { id: "preview-agent" });
  const preview = el("pre", { id: "preview", class: "panel" });
  const form = el(
    "form",
    { id: "prompt-add" },
    el("h2", {}, "Add a prompt"),
    el("label", { for: "prompt-scope" }, "Scope"),
    el(
      "select",
      { id: "prompt-scope", name: "scope" },
      el("option", { value: "user" }, "just me"),
      identity().admin && el("option", { value: "organization" }, "the whole organization"),
    ),
    el("label", { for: "prompt-name" }, "Name"),
    el("input", { id: "prompt-name", name: "name", required: true }),
    el("label", { for: "prompt-content" }, "Text"),
    el("textarea", { id: "prompt-content", name: "content", required: true }),
    el("label", { for: "prompt-priority" }, "Priority (higher first)"),
    el("input", { id: "prompt-priority", name: "priority", type: "number", value: "0" }),
    el("label", {}, el("input", { type: "checkbox", name: "is_template", value: "true" }), " Jinja2 template"),
    el("p", {}, el("button", { class: "primary", type: "submit" }, "Add")),
  );

  async function showPreview() {
    if (!agent.value) return;
    try {
      const answer = await api(`/api/v1/prompts/preview?agent_type=${encodeURIComponent(agent.value)}`);
      preview.textContent = printable(answer.prompt) || "(empty: no prompt applies)";
    } catch (error) {
      preview.textContent = error.message;
    }
  }

  const showProblem = errorsIn(problem);

  function promptRow(prompt) {
    return el(
      "tr",
      { dataset: { prompt: prompt.id } },
      el("td", {}, prompt.scope),
      el("td", {}, prompt.name),
      el("td", {}, String(prompt.priority)),
      el("td", {}, el("pre", {}, printable(prompt.content)), prompt.warnings.map((w) => el("div", { class: "error" }, w))),
      el("td", {}, deleteButton("Delete", `/api/v1/prompts/${prompt.id}`, load, showProblem)),
    );
  }

  async function load() {
    if (await fillRows(rows, "/api/v1/prompts?limit=100", (page) => page.prompts, promptRow, showProblem)) showPreview();
  }

  postForm(
    form,
    "/api/v1/prompts",
    (values) => ({
      scope: values.scope,
      name: values.name,
      content: values.content,
      priority: Number(values.priority || 0),
      is_template: values.is_template === "true",
    }),
    load,
  );
  agent.addEventListener("change", showPreview);
  api("/api/v1/agents")
    .then(({ agents }) => {
      agent.replaceChildren(...agents.map((a) => el("option", { value: a.type }, a.label)));
      showPreview();
    })
    .catch(showProblem);
  load();
  return el(
    "section",
    { id: "prompts" },
    el("h1", {}, "System prompts"),
    problem,
    table(["Scope", "Name", "Priority", "Text", ""], rows),
    form,
    el("h2", {}, "What a new session gets"),
    el("div", { class: "row" }, el("label", { for: "preview-agent" }, "Agent type"), agent),
    preview,
  );
}

// ---- admin -----------------------------------------------------------------------------------

const ROLES = ["member", "admin", "owner"];
const OUTBOUND_EVENTS = ["session.ended", "session.failed", "message.completed", "tool_call.completed", "tool_call.failed"];

function adminPage() {
  const me = identity();
  const denied = el("div", { id: "admin-denied" });
  const refused = (error) => {
    if (error instanceof ApiError && error.status === 403) denied.replaceChildren(errorBox(`Admins only: ${error.message}`));
    return errorBox(error);
  };
  return el(
    "section",
    { id: "admin" },
    el("h1", {}, "Administration"),
    denied,
    membersPanel(me, refused),
    webhooksPanel(refused),
    auditPanel(refused),
    settingsPanel(refused),
  );
}

function membersPanel(me, refused) {
  const rows = el("tbody");
  const problem = el("div");
  const base = `/api/v1/orgs/${me.orgId}/members`;
  const form = el(
    "form",
    { id: "member-add", class: "row" },
    el("input", { name: "user_id", placeholder: "user id (UUID)", required: true }),
    el("input", { name: "email", placeholder: "email (optional)" }),
    el("select", { name: "role" }, ROLES.map((role) => el("option", { value: role }, role))),
    el("button", { type: "submit" }, "Add member"),
  );
  const showProblem = errorsIn(problem);
  function memberRow(member) {
    const role = el("select", {}, ROLES.map((r) => el("option", { value: r, selected: r === member.role }, r)));
    role.addEventListener("change", async () => {
      try {
        await api(`${base}/${member.user_id}`, { method: "PATCH", body: { role: role.value } });
      } catch (error) {
        showProblem(error);
        load();
      }
    });
    const remove = deleteButton("Remove", `${base}/${member.user_id}`, load, showProblem);
    return el("tr", { dataset: { member: member.user_id } }, el("td", {}, member.email || member.user_id), el("td", {}, role), el("td", {}, remove));
  }
  async function load() {
    await fillRows(rows, `${base}?limit=200`, (page) => page.members, memberRow, (error) => problem.replaceChildren(refused(error)));
  }
  postForm(
    form,
    base,
    (values) => {
      const body = { user_id: values.user_id, role: values.role };
      if (values.email) body.email = values.email;
      return body;
    },
    load,
  );
  load();
  return el("div", { class: "panel", id: "members" }, el("h2", {}, "Members and roles"), problem, el("table", {}, rows), form);
}

function webhooksPanel(refused) {
  const rows = el("tbody");
  const problem = el("div");
  const secret = el("div", { id: "webhook-secret" });
  const form = el(
    "form",
    { id: "webhook-add" },
    el("label", { for: "webhook-name" }, "Name"),
    el("input", { id: "webhook-name", name: "name", required: true }),
    el("label", { for: "webhook-target" }, "Target URL (outbound, https)"),
    el("input", { id: "webhook-target", name: "target_url" }),
    el("label", {}, "Events"),
    el("div", { class: "row" }, OUTBOUND_EVENTS.map((type) => el("label", {}, el("input", { type: "checkbox", name: "event_types", value: type }), ` ${type}`))),
    el("p", {}, el("button", { type: "submit" }, "Add outbound webhook")),
  );
  function hookRow(hook) {
    const remove = deleteButton("Delete", `/api/v1/webhooks/${hook.id}`, load, errorsIn(problem));
    return el("tr", { dataset: { webhook: hook.id } }, el("td", {}, hook.name), el("td", {}, hook.direction), el("td", {}, hook.target_url || hook.action.type || ""), el("td", {}, hook.event_types.join(", ")), el("td", {}, remove));
  }
  async function load() {
    await fillRows(rows, "/api/v1/webhooks", (hooks) => hooks, hookRow, (error) => problem.replaceChildren(refused(error)));
  }
  postForm(
    form,
    "/api/v1/webhooks",
    (values, filled) => ({ name: values.name, direction: "outbound", target_url: values.target_url, event_types: new FormData(filled).getAll("event_types") }),
    (created) => {
      // The API shows a secret once; so does the page (gone on the next visit).
      secret.replaceChildren(el("p", {}, "Signing secret (shown once, copy it now):"), el("div", { class: "secret" }, created.secret));
      load();
    },
  );
  load();
  return el("div", { class: "panel", id: "webhooks" }, el("h2", {}, "Webhooks"), problem, el("table", {}, rows), secret, form);
}

function auditPanel(refused) {
  const rows = el("tbody");
  const problem = el("div");
  const more = el("button", { type: "button", hidden: true }, "More");
  const filters = el(
    "form",
    { id: "audit-filters", class: "row" },
    el("input", { name: "action", placeholder: "action prefix, e.g. POST /api/v1/sessions" }),
    el("select", { name: "outcome" }, ["", "success", "failure", "denied", "error"].map((value) => el("option", { value }, value || "any outcome"))),
    el("button", { type: "submit" }, "Filter"),
  );
  let cursor = null;
  async function load(reset) {
    if (reset) {
      cursor = null;
      rows.replaceChildren();
    }
    const query = new URLSearchParams({ limit: "50" });
    for (const [key, value] of new FormData(filters).entries()) if (value) query.set(key, value);
    if (cursor) query.set("cursor", cursor);
    try {
      const page = await api(`/api/v1/audit?${query}`);
      for (const entry of page.entries) {
        rows.append(el("tr", {}, el("td", {}, when(entry.ts)), el("td", {}, entry.action), el("td", {}, entry.outcome), el("td", {}, entry.actor_user_id || "—"), el("td", {}, entry.ip || "")));
      }
      cursor = page.next_cursor;
      more.hidden = !cursor;
    } catch (error) {
      problem.replaceChildren(refused(error));
    }
  }
  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    load(true);
  });
  more.addEventListener("click", () => load(false));
  load(true);
  return el("div", { class: "panel", id: "audit" }, el("h2", {}, "Audit log"), filters, problem, el("table", {}, rows), more);
}

function settingsPanel(refused) {
  const problem = el("div");
  const names = el("p", { id: "secret-names", class: "muted" });
  const form = el(
    "form",
    { id: "settings-form" },
    el("label", { for: "settings-json" }, "Settings (JSON)"),
    el("textarea", { id: "settings-json", name: "settings", spellcheck: "false" }),
    el("label", { for: "retention" }, "Retention (days, optional)"),
    el("input", { id: "retention", name: "retention_days", type: "number", min: 1 }),
    el("label", {}, "Add or replace a secret (write-only: never shown again)"),
    el("div", { class: "row" }, el("input", { name: "secret_name", placeholder: "name" }), el("input", { name: "secret_value", type: "password", placeholder: "value", autocomplete: "off" })),
    names,
    el("p", {}, el("button", { type: "submit" }, "Save settings")),
  );
  function show(current) {
    form.settings.value = JSON.stringify(current.settings, null, 2);
    form.retention_days.value = current.retention_days ?? "";
    names.textContent = current.secret_names.length ? `Stored secrets: ${current.secret_names.join(", ")}` : "No stored secrets.";
  }
  api("/api/v1/settings").then(show).catch((error) => problem.replaceChildren(refused(error)));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const values = formValues(form);
    let settings;
    try {
      settings = JSON.parse(values.settings || "{}");
    } catch {
      showFieldErrors(form, new Error("Settings must be JSON"));
      return;
    }
    const body = { settings };
    if (values.retention_days) body.retention_days = Number(values.retention_days);
    if (values.secret_name) body.secrets = { [values.secret_name]: values.secret_value };
    try {
      show(await api("/api/v1/settings", { method: "PUT", body }));
      form.secret_name.value = "";
      form.secret_value.value = "";
      showFieldErrors(form, null);
    } catch (error) {
      showFieldErrors(form, error);
    }
  });
  return el("div", { class: "panel", id: "settings" }, el("h2", {}, "Organization settings"), problem, form);
}

// ---- routing ---------------------------------------------------------------------------------

const PAGES = [
  [/^#\/sessions$/, sessionsPage],
  [/^#\/new$/, newSessionPage],
  [/^#\/chat\/([0-9a-f-]{36})$/, chatPage],
  [/^#\/mcp$/, mcpPage],
  [/^#\/prompts$/, promptsPage],
  [/^#\/admin$/, adminPage],
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
