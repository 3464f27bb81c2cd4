/**
 * The embedded chat (templates/chat/embed.html): what a website's visitor sees in the chat
 * bubble's frame or in the website's own iframe. Plain DOM, no React: it loads on other
 * people's pages, so it stays small.
 *
 * The visitor's token and current conversation live in this frame's localStorage (the
 * browser partitions it per website). An answer streams over an EventSource; when the
 * connection drops, the browser reconnects with Last-Event-ID and the server resumes right
 * after it; a reload reattaches to an answer still being written.
 */
import { renderMarkdown } from "../chat/markdown";
import { applyEvent, emptyAnswer, type Answer, type VisitorEvent } from "./answer";

interface Config {
  token: string;
  title: string;
  welcome: string;
  accent: string;
  showSources: boolean;
}

interface Turn {
  run_id: string;
  question: string;
  answer: string;
  status: string;
  error: string | null;
}

class Refused extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const config = JSON.parse(document.getElementById("embed-config")!.textContent || "{}") as Config;
const storageKey = `flowdeck.embed.${config.token}`;
const root = document.getElementById("embed-root")!;
document.documentElement.style.setProperty("--accent", config.accent);

function load(): { visitor?: string; conversation?: string } {
  try {
    return JSON.parse(localStorage.getItem(storageKey) || "{}");
  } catch {
    return {};
  }
}

function save(state: { visitor?: string; conversation?: string }): void {
  try {
    localStorage.setItem(storageKey, JSON.stringify(state));
  } catch {
    /* storage blocked: the chat still works for this page view */
  }
}

let state = load();

async function call<T>(method: string, path: string, body?: unknown, retry = true): Promise<T> {
  const headers: Record<string, string> = { "Content-Type": "application/json" };
  if (state.visitor) headers["X-Flowdeck-Visitor"] = state.visitor;
  const response = await fetch(`api/${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
  });
  const data = await response.json().catch(() => ({}));
  if (response.ok) return data as T;
  if (response.status === 401 && retry) {
    // The token was not accepted (the deployment's key changed): start as a new visitor.
    state = {};
    save(state);
    await ensureVisitor();
    return call<T>(method, path, body, false);
  }
  throw new Refused(response.status, data.code ?? "error", data.message ?? "Something went wrong.");
}

async function ensureVisitor(): Promise<void> {
  if (state.visitor) return;
  const { visitor } = await call<{ visitor: string }>("POST", "visitor", {}, false);
  state = { visitor };
  save(state);
}

// --- the page --------------------------------------------------------------------------------
const head = root.querySelector(".embed-head")!;
const newChat = element("button", { class: "embed-new", type: "button", title: "New chat" }, "New chat");
head.append(newChat);
const log = element("div", { class: "embed-log", role: "log", "aria-live": "polite" });
const form = element("form", { class: "embed-form" }) as HTMLFormElement;
const input = element("textarea", {
  class: "embed-input",
  rows: "1",
  placeholder: "Write a message…",
  "aria-label": "Message",
  maxlength: "4000",
}) as HTMLTextAreaElement;
const send = element("button", { class: "embed-send", type: "submit" }, "Send") as HTMLButtonElement;
const stopButton = element("button", { class: "embed-stop", type: "button", hidden: "" }, "Stop");
form.append(input, stopButton, send);
const foot = element("div", { class: "embed-foot" }, "Powered by Flowdeck");
root.append(log, form, foot);

function element(tag: string, attributes: Record<string, string> = {}, text = ""): HTMLElement {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text) node.textContent = text;
  return node;
}

function scrollDown(): void {
  log.scrollTop = log.scrollHeight;
}

function welcome(): void {
  log.replaceChildren();
  if (config.welcome) log.append(bubble("assistant", config.welcome));
}

function bubble(role: "user" | "assistant", text: string): HTMLElement {
  const node = element("div", { class: `embed-msg embed-${role}` });
  if (role === "user") node.textContent = text;
  else node.innerHTML = renderMarkdown(text);
  return node;
}

function showAnswer(node: HTMLElement, answer: Answer): void {
  node.innerHTML = renderMarkdown(answer.text);
  node.classList.toggle("embed-pending", !answer.done);
  if (!answer.done && !answer.text) node.append(element("span", { class: "embed-dots" }, "…"));
  if (answer.error) node.append(element("p", { class: "embed-error", role: "alert" }, answer.error));
  if (answer.status === "cancelled") node.append(element("p", { class: "embed-note" }, "Stopped."));
  if (config.showSources && answer.sources.length) {
    const list = element("ol", { class: "embed-sources", "aria-label": "Sources" });
    for (const source of answer.sources) {
      const item = element("li", {}, source.page ? `${source.title}, p. ${source.page}` : source.title);
      if (source.excerpt) item.title = source.excerpt;
      list.append(item);
    }
    node.append(list);
  }
  scrollDown();
}

function busy(on: boolean): void {
  send.disabled = on;
  stopButton.hidden = !on;
  newChat.toggleAttribute("disabled", on);
}

let current: { run: string; source: EventSource | null } | null = null;

function follow(runId: string, node: HTMLElement): Promise<void> {
  busy(true);
  let answer = emptyAnswer();
  showAnswer(node, answer);
  return new Promise((resolve) => {
    const url = `api/runs/${encodeURIComponent(runId)}/events?visitor=${encodeURIComponent(state.visitor ?? "")}`;
    const source = new EventSource(url);
    current = { run: runId, source };
    const finish = () => {
      source.close();
      current = null;
      busy(false);
      resolve();
    };
    source.onmessage = (message) => {
      answer = applyEvent(answer, JSON.parse(message.data) as VisitorEvent);
      showAnswer(node, answer);
      if (answer.done) finish();
    };
    source.onerror = () => {
      // A dropped connection: the browser reconnects by itself (CONNECTING) and resumes
      // after the last event. CLOSED means it gave up (the server refused): say so.
      if (source.readyState === EventSource.CLOSED) {
        answer = { ...answer, done: true, error: answer.error ?? "The connection was lost." };
        showAnswer(node, answer);
        finish();
      }
    };
  });
}

async function ask(text: string): Promise<void> {
  log.append(bubble("user", text));
  const node = bubble("assistant", "");
  log.append(node);
  scrollDown();
  busy(true);
  try {
    await ensureVisitor();
    const started = await call<{ conversation_id: string; run_id: string }>("POST", "messages", {
      message: text,
      conversation_id: state.conversation ?? null,
    });
    state = { ...state, conversation: started.conversation_id };
    save(state);
    await follow(started.run_id, node);
  } catch (error) {
    const message = error instanceof Refused ? error.message : "The chat could not be reached.";
    showAnswer(node, { ...emptyAnswer(), done: true, error: message });
    busy(false);
  }
}

async function restore(): Promise<void> {
  welcome();
  if (!state.visitor || !state.conversation) return;
  let turns: Turn[];
  try {
    ({ turns } = await call<{ turns: Turn[] }>("GET", `conversations/${state.conversation}`));
  } catch {
    state = { visitor: state.visitor };
    save(state);
    return;
  }
  for (const turn of turns) {
    log.append(bubble("user", turn.question));
    const node = bubble("assistant", "");
    log.append(node);
    if (turn.status === "running") {
      void follow(turn.run_id, node); // still being written: pick it up where it is
    } else {
      showAnswer(node, {
        ...emptyAnswer(),
        text: turn.answer,
        done: true,
        status: turn.status,
        error: turn.error,
      });
    }
  }
  scrollDown();
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = input.value.trim();
  if (!text || send.disabled) return;
  input.value = "";
  void ask(text);
});

input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    form.requestSubmit();
  }
});

stopButton.addEventListener("click", () => {
  if (current) void call("POST", `runs/${encodeURIComponent(current.run)}/stop`, {}).catch(() => undefined);
});

newChat.addEventListener("click", () => {
  state = { visitor: state.visitor };
  save(state);
  welcome();
  input.focus();
});

void restore();
