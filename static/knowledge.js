// A knowledge base's page: uploads with a progress bar per file, ingestion progress live
// from the knowledge WebSocket, and the test-retrieval box. No inline script (CSP): the
// page hands its settings over in <script type="application/json" id="knowledge-config">.
//
// The database is the truth: on every (re)connect the consumer sends a snapshot of every
// document, so a reload or a dropped socket shows where ingestion stands.
(() => {
  "use strict";

  const configElement = document.getElementById("knowledge-config");
  if (!configElement) return;
  const config = JSON.parse(configElement.textContent);

  const rows = document.querySelector("[data-testid='document-rows']");
  const rowTemplate = document.getElementById("document-row");
  const emptyRow = rows.querySelector(".empty-row");
  const connection = document.querySelector("[data-testid='connection']");

  const UPLOADS_AT_ONCE = 3;
  const queue = []; // files waiting for an upload slot: {file, row}
  let uploading = 0;
  const STATUS_LABEL = {
    queued: "Queued",
    parsing: "Parsing",
    embedding: "Embedding",
    indexed: "Indexed",
    failed: "Failed",
    uploading: "Uploading",
    refused: "Refused",
  };

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    if (match) return decodeURIComponent(match[1]);
    const field = document.querySelector("input[name=csrfmiddlewaretoken]");
    return field ? field.value : "";
  }

  function formatSize(bytes) {
    if (bytes == null) return "–";
    if (bytes < 1024) return `${bytes} bytes`;
    const units = ["KB", "MB", "GB"];
    let value = bytes / 1024;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return `${value.toFixed(1)} ${units[unit]}`;
  }

  function extensionOf(name) {
    const dot = name.lastIndexOf(".");
    return dot > 0 ? name.slice(dot + 1).toLowerCase() : "";
  }

  // --- rows ---------------------------------------------------------------------------
  function cell(row, name) {
    return row.querySelector(`[data-cell='${name}']`);
  }

  function newRow() {
    if (rowTemplate) return rowTemplate.content.firstElementChild.cloneNode(true);
    // Viewers get no template (no forms): a plain row with the same cells.
    const row = document.createElement("tr");
    for (const name of ["name", "format", "size", "pages", "chunks"]) {
      const td = document.createElement("td");
      td.dataset.cell = name;
      row.append(td);
    }
    const status = document.createElement("td");
    status.dataset.cell = "status";
    status.innerHTML =
      '<div class="doc-progress"><progress max="1"></progress><span class="doc-status" data-testid="doc-status"></span></div>' +
      '<p class="doc-error" data-cell="error" hidden></p>';
    row.append(status);
    return row;
  }

  function addRow(row) {
    rows.prepend(row);
    emptyRow.hidden = true;
  }

  function removeRow(row) {
    row.remove();
    emptyRow.hidden = rows.querySelector("tr:not(.empty-row)") !== null;
    recount();
  }

  // The counts in the page's head follow the rows (the page rendered them once).
  function recount() {
    const documents = rows.querySelectorAll("tr[data-document]");
    let chunks = 0;
    for (const row of documents) chunks += Number(cell(row, "chunks").textContent) || 0;
    const shown = { documents: documents.length, chunks };
    for (const [name, value] of Object.entries(shown)) {
      const count = document.querySelector(`[data-count='${name}']`);
      if (count) count.textContent = String(value);
    }
  }

  // Show where a row stands: `status` (a document's, or uploading/refused), a fraction
  // for the bar (null: indeterminate), a label and an error sentence.
  function showStatus(row, status, fraction, label, error) {
    row.dataset.status = status;
    const bar = row.querySelector("progress");
    if (fraction === null) bar.removeAttribute("value");
    else bar.value = Math.max(0, Math.min(1, fraction));
    const badge = row.querySelector(".doc-status");
    badge.dataset.status = status;
    badge.textContent = label;
    const errorLine = cell(row, "error");
    if (errorLine) {
      errorLine.textContent = error || "";
      errorLine.hidden = !error;
    }
  }

  function documentRow(id) {
    return rows.querySelector(`tr[data-document='${Number(id)}']`);
  }

  // States of documents the page has no row for yet, while uploads are in flight: the
  // socket may tell of a document before its upload's response names it, and the file
  // already has its row (the upload's), which takes the state over when the response comes.
  const early = new Map();

  function uploadsInFlight() {
    return queue.length + uploading > 0;
  }

  // A document's state (knowledge.progress.document_state) onto its row.
  function showDocument(state) {
    let row = documentRow(state.id);
    if (state.status === "deleted") {
      early.delete(state.id);
      if (row) removeRow(row);
      return;
    }
    if (!row && uploadsInFlight()) {
      early.set(state.id, state);
      return;
    }
    if (!row) {
      row = newRow();
      row.dataset.document = String(state.id);
      addRow(row);
    }
    fillDocument(row, state);
  }

  function fillDocument(row, state) {
    row.dataset.document = String(state.id);
    cell(row, "name").textContent = state.name;
    cell(row, "format").textContent = state.format;
    cell(row, "size").textContent = formatSize(state.size);
    cell(row, "pages").textContent = state.pages == null ? "–" : String(state.pages);
    cell(row, "chunks").textContent = String(state.chunk_count);
    const { done, total } = state.progress || { done: 0, total: 0 };
    let fraction = null;
    let label = STATUS_LABEL[state.status] || state.status;
    if (state.status === "indexed") fraction = 1;
    else if (state.status === "failed") fraction = 0;
    else if (total > 0) {
      fraction = done / total;
      label = `${label} ${done}/${total} chunks`;
    }
    showStatus(row, state.status, fraction, label, state.status === "failed" ? state.error_message : "");
    for (const form of row.querySelectorAll("form[data-action]")) {
      form.querySelector("input[name=document]").value = String(state.id);
      if (form.dataset.action === "retry") form.hidden = state.status !== "failed";
      else {
        form.hidden = false;
        form.dataset.confirm = `Delete “${state.name}” and its chunks?`;
      }
    }
    recount();
  }

  // --- live progress ------------------------------------------------------------------
  let socket = null;
  let retryDelay = 1000;
  let stopped = false;

  function showConnection(state, text) {
    if (!connection) return;
    connection.dataset.state = state;
    connection.textContent = text;
  }

  function applySnapshot(documents) {
    const seen = new Set();
    // Oldest first, each prepended: the newest ends on top, as the page renders them.
    for (const state of [...documents].reverse()) {
      seen.add(String(state.id));
      showDocument(state);
    }
    for (const row of rows.querySelectorAll("tr[data-document]")) {
      if (!seen.has(row.dataset.document)) removeRow(row); // deleted while we were away
    }
  }

  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(`${scheme}//${window.location.host}${config.socket}`);
    showConnection("connecting", "Connecting…");
    socket.addEventListener("open", () => {
      retryDelay = 1000;
      showConnection("open", "Live");
    });
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message.event === "snapshot") applySnapshot(message.documents || []);
      else if (message.event === "document" && message.document) showDocument(message.document);
      else if (message.event === "rejected") {
        stopped = true;
        showConnection("closed", message.message || "Live progress is not available.");
      }
    });
    socket.addEventListener("close", (event) => {
      socket = null;
      if (stopped) return;
      if (event.code === 4401) {
        showConnection("closed", "Signed out: reload the page.");
        return;
      }
      const seconds = Math.round(retryDelay / 1000);
      showConnection("closed", `Reconnecting in ${seconds}s…`);
      window.setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 30000);
    });
  }

  // --- uploads ------------------------------------------------------------------------

  function refuse(row, reason) {
    showStatus(row, "refused", 0, STATUS_LABEL.refused, reason);
  }

  function refusalOf(status, body) {
    if (body && typeof body === "object") {
      if (typeof body.detail === "string") return body.detail;
      const detail = body.detail || {};
      const lines = detail.files || detail.__all__ || Object.values(detail).flat();
      // The API says "<file name>: <why>" per file; the row already names the file.
      if (lines.length) return String(lines[0]).replace(/^[^:]*:\s*/, "");
    }
    if (status === 413) return `The file is over the limit of ${formatSize(config.maxFileBytes)}.`;
    if (status === 403) return "Your role may not upload here.";
    return `The upload failed (HTTP ${status}).`;
  }

  function uploadRow(file) {
    const row = newRow();
    row.dataset.upload = file.name;
    cell(row, "name").textContent = file.name;
    cell(row, "format").textContent = extensionOf(file.name) || "–";
    cell(row, "size").textContent = formatSize(file.size);
    cell(row, "pages").textContent = "–";
    cell(row, "chunks").textContent = "–";
    addRow(row);
    return row;
  }

  function whyNot(file) {
    const extension = extensionOf(file.name);
    if (!config.extensions.includes(extension)) {
      const known = config.extensions.map((e) => `.${e}`).join(", ");
      return `Files of this type cannot be read; upload ${known}.`;
    }
    if (file.size === 0) return "The file is empty.";
    if (file.size > config.maxFileBytes) {
      return `The file is ${formatSize(file.size)}; files are limited to ${formatSize(config.maxFileBytes)}.`;
    }
    return null;
  }

  function addFiles(files) {
    for (const file of files) {
      const row = uploadRow(file);
      const reason = whyNot(file);
      if (reason) refuse(row, reason);
      else {
        showStatus(row, "uploading", 0, `${STATUS_LABEL.uploading} 0%`, "");
        queue.push({ file, row });
      }
    }
    pump();
  }

  function pump() {
    while (uploading < UPLOADS_AT_ONCE && queue.length) {
      const next = queue.shift();
      uploading += 1;
      send(next.file, next.row).finally(() => {
        uploading -= 1;
        pump();
        if (!uploadsInFlight()) {
          // Documents none of these uploads turned out to be (someone else's upload).
          const rest = [...early.values()];
          early.clear();
          for (const state of rest) showDocument(state);
        }
      });
    }
  }

  // One request per file, so each has its own progress and a refused file never blocks
  // the others (the API takes several per request as well).
  function send(file, row) {
    return new Promise((resolve) => {
      const body = new FormData();
      body.append("files", file, file.name);
      const request = new XMLHttpRequest();
      request.open("POST", `${config.api}/documents`);
      request.setRequestHeader("X-CSRFToken", csrfToken());
      request.setRequestHeader("Accept", "application/json");
      request.upload.addEventListener("progress", (event) => {
        if (!event.lengthComputable) return;
        const percent = Math.floor((100 * event.loaded) / event.total);
        showStatus(row, "uploading", event.loaded / event.total, `${STATUS_LABEL.uploading} ${percent}%`, "");
      });
      request.addEventListener("load", () => {
        let data = null;
        try {
          data = JSON.parse(request.responseText);
        } catch {
          data = null;
        }
        uploaded(row, request.status, data);
        resolve();
      });
      request.addEventListener("error", () => {
        refuse(row, "The connection was lost during the upload; try again.");
        resolve();
      });
      request.send(body);
    });
  }

  function uploaded(row, status, data) {
    const result = data && Array.isArray(data.results) ? data.results[0] : null;
    if ((status !== 200 && status !== 201) || !result) {
      refuse(row, refusalOf(status, data));
      return;
    }
    if (!result.document) {
      refuse(row, result.message || "The file was refused.");
      return;
    }
    if (!result.created) {
      refuse(row, result.message || "The same file is here already.");
      return;
    }
    const id = result.document.id;
    if (documentRow(id)) {
      removeRow(row); // a row of its own already (a snapshot came in between): keep that one
      return;
    }
    delete row.dataset.upload;
    // What the socket said since is newer than the response (both come after the commit).
    const state = early.get(id) || result.document;
    early.delete(id);
    fillDocument(row, state);
  }

  const input = document.querySelector("[data-testid='upload-input']");
  const zone = document.querySelector("[data-testid='dropzone']");
  if (input && zone) {
    input.addEventListener("change", () => {
      addFiles([...input.files]);
      input.value = "";
    });
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("dragging");
      if (event.dataTransfer && event.dataTransfer.files.length) addFiles([...event.dataTransfer.files]);
    });
  }

  // --- test retrieval -----------------------------------------------------------------
  const searchForm = document.querySelector("[data-testid='test-retrieval']");
  const result = document.querySelector("[data-testid='search-result']");

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  }

  function showHits(data) {
    result.replaceChildren();
    const head = element("p", "muted", `${data.hits.length} hit(s), ${data.used} search`);
    head.dataset.testid = "search-summary";
    result.append(head);
    for (const note of data.notes || []) result.append(element("p", "hint-line", note));
    const list = element("ol", "hits");
    list.dataset.testid = "search-hits";
    for (const hit of data.hits) {
      const item = element("li", "hit");
      item.dataset.testid = "hit";
      const meta = element("div", "hit-meta");
      meta.append(element("strong", "", hit.document));
      if (hit.page != null) meta.append(element("span", "", `page ${hit.page}`));
      if (hit.heading) meta.append(element("span", "", hit.heading));
      meta.append(element("span", "", `chunk ${hit.chunk}`));
      meta.append(element("span", "score", `score ${hit.score.toFixed(3)}`));
      item.append(meta, element("p", "hit-text", hit.text));
      list.append(item);
    }
    if (data.hits.length) result.append(list);
  }

  if (searchForm) {
    searchForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const form = new FormData(searchForm);
      const button = searchForm.querySelector("button[type=submit]");
      button.disabled = true;
      result.replaceChildren(element("p", "muted", "Searching…"));
      try {
        const response = await fetch(`${config.api}/search`, {
          method: "POST",
          credentials: "same-origin",
          headers: {
            "Content-Type": "application/json",
            Accept: "application/json",
            "X-CSRFToken": csrfToken(),
          },
          body: JSON.stringify({
            query: String(form.get("query") || ""),
            mode: String(form.get("mode") || "keyword"),
            k: Number(form.get("k") || 5),
          }),
        });
        const data = await response.json().catch(() => null);
        if (!response.ok || !data) {
          const detail = data && (typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail));
          result.replaceChildren(element("p", "error", detail || `The search failed (HTTP ${response.status}).`));
        } else showHits(data);
      } catch {
        result.replaceChildren(element("p", "error", "The search could not reach the server; try again."));
      } finally {
        button.disabled = false;
      }
    });
  }

  connect();
})();
