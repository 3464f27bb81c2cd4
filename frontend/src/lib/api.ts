/** JSON calls to /api/w/<slug>/ with the session cookie and Django's CSRF token. */

export class ApiError extends Error {
  constructor(
    public readonly status: number,
    public readonly body: unknown,
  ) {
    super(describe(status, body));
  }
}

function describe(status: number, body: unknown): string {
  if (body && typeof body === "object") {
    const b = body as Record<string, unknown>;
    if (typeof b.message === "string") return b.message;
    if (typeof b.detail === "string") return b.detail;
    if (b.detail && typeof b.detail === "object") {
      return Object.entries(b.detail as Record<string, unknown>)
        .map(([k, v]) => `${k === "__all__" ? "" : k + ": "}${Array.isArray(v) ? v.join(" ") : JSON.stringify(v)}`)
        .join("; ");
    }
  }
  return `Request failed (${status})`;
}

export function csrfToken(): string {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

export class Api {
  constructor(private readonly base: string) {}

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET") headers["X-CSRFToken"] = csrfToken();
    const response = await fetch(this.base + path, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let data: unknown = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = text;
      }
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return data as T;
  }

  get<T>(path: string): Promise<T> {
    return this.request<T>("GET", path);
  }

  post<T>(path: string, body: unknown): Promise<T> {
    return this.request<T>("POST", path, body);
  }

  put<T>(path: string, body: unknown): Promise<T> {
    return this.request<T>("PUT", path, body);
  }

  delete(path: string): Promise<unknown> {
    return this.request<unknown>("DELETE", path);
  }

  /**
   * A write that outlives the page (`keepalive`): for the last save when the tab closes.
   * Browsers cap keepalive bodies at 64 KiB in flight; larger ones are not sent (the caller
   * keeps its local copy). Whether the server took it is never known here.
   */
  sendOnUnload(method: string, path: string, body: unknown): boolean {
    const text = JSON.stringify(body);
    if (text.length > 60_000) return false;
    try {
      void fetch(this.base + path, {
        method,
        keepalive: true,
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken() },
        body: text,
      }).catch(() => undefined);
      return true;
    } catch {
      return false;
    }
  }
}
