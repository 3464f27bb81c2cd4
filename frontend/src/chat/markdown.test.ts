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
    const attributes = [...el.querySelectorAll("*")].flatMap((e) => [...e.attributes].map((a) => `${a.name}=${a.value}`));
    expect(attributes.filter((a) => /^on|javascript:/i.test(a))).toEqual([]);
    expect(el.querySelector("svg")).toBeNull();
    expect(el.querySelector("img")).toBeNull(); // raw HTML is shown as text, not parsed
    expect(el.textContent).toContain('<img src="x"');
    expect(el.querySelector("a[href^='javascript']")).toBeNull();
  });

  it("still cleans what Markdown itself makes: images and links", () => {
    const el = dom(renderMarkdown('![pic](javascript:alert(1)) ![ok](/static/x.png "t")'));
    expect(el.innerHTML).not.toMatch(/javascript:/i);
    expect([...el.querySelectorAll("img")].map((i) => i.getAttribute("src"))).toContain("/static/x.png");
  });

  it("opens links elsewhere without telling them where from", () => {
    const a = dom(renderMarkdown("[docs](https://example.com/docs)")).querySelector("a")!;
    expect(a.getAttribute("href")).toBe("https://example.com/docs");
    expect(a.getAttribute("rel")).toContain("noopener");
  });
});
