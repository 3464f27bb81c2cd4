/**
 * A model's answer as HTML: Markdown (GitHub flavour: code blocks, tables) rendered by
 * `marked` with raw HTML escaped, then sanitised by DOMPurify, because the text is
 * whatever the model (or a prompt injected into it) wrote: scripts, event handlers,
 * `javascript:` links and embedded frames never reach the page.
 */
import DOMPurify from "dompurify";
import { Marked } from "marked";

const ESCAPES: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

// Raw HTML in the model's Markdown is shown as the text it is, never parsed as markup:
// an answer that talks about HTML reads right, and what DOMPurify gets holds no foreign
// tags at all (it still cleans what Markdown itself makes: links, images).
const markdown = new Marked({
  gfm: true,
  breaks: false,
  async: false,
  renderer: {
    html(token) {
      return escapeHtml(token.text);
    },
  },
});

let hooked = false;

function purifier(): typeof DOMPurify {
  if (!hooked) {
    // Links open elsewhere and tell the target nothing about this page.
    DOMPurify.addHook("afterSanitizeAttributes", (node) => {
      if (node.tagName === "A" && node.getAttribute("href")) {
        node.setAttribute("target", "_blank");
        node.setAttribute("rel", "noopener noreferrer nofollow");
      }
    });
    hooked = true;
  }
  return DOMPurify;
}

export function renderMarkdown(text: string): string {
  const html = markdown.parse(text) as string;
  return purifier().sanitize(html, {
    USE_PROFILES: { html: true },
    FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "iframe", "object", "embed"],
    FORBID_ATTR: ["style"],
  });
}
