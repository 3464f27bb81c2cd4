// @vitest-environment jsdom
import { describe, expect, it } from "vitest";
import { renderMarkdown } from "./markdown";

function dom(html: string): HTMLElement {
  const el = document.createElement("div");
  el.innerHTML = html;
  return el;
}

describe("renderMarkdown", () => {
  it("renders code blocks and tables", () => {
    const el = dom(renderMarkdown("```python\nprint('hi')\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"));
    expect(el.querySelector("pre code")?.textContent).toBe("print('hi')\n");
    expect([...el.querySelectorAll("td")].map((td) => td.textContent)).toEqual(["1", "2"]);
  });

  it("neutralises scripts, event handlers and javascript: links from the model", () => {
    const html = renderMarkdown(
      'Hi <script>window.pwned = 1</script><img src="x" onerror="window.pwned = 2">' +
        ' <a href="javascript:alert(1)">click</a> <iframe src="https://evil.example"></iframe>' +
        ' <svg onload="alert(1)"></svg> [md](javascript:alert(2))',
    );
    const el = dom(html);
    expect(el.querySelector("script")).toBeNull();
    expect(el.querySelector("iframe")).toBeNull();
    expect(html).not.toMatch(/onerror|onload|javascript:/i);
    expect(el.querySelector("img")?.getAttribute("src")).toBe("x");
    expect(el.textContent).toContain("click");
  });

  it("opens links elsewhere without telling them where from", () => {
    const a = dom(renderMarkdown("[docs](https://example.com/docs)")).querySelector("a")!;
    expect(a.getAttribute("href")).toBe("https://example.com/docs");
    expect(a.getAttribute("rel")).toContain("noopener");
  });
});
