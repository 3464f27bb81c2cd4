/*
 * Flowdeck's chat bubble for websites. Paste the snippet from a flow's Embed page:
 *   <script src="https://flowdeck.example.com/static/flowdeck-embed.js" data-embed="emb_…" async></script>
 * It draws a round button in the page's corner that opens the chat in a frame served by
 * Flowdeck (/embed/<token>/): the website's scripts never see the conversation, and
 * Flowdeck lets only the embed's allowed websites frame it. Options, as data- attributes:
 * data-color (the button's colour), data-position ("left" or "right"), data-open ("true":
 * open at once).
 */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || !script.getAttribute("data-embed")) return;
  var token = script.getAttribute("data-embed");
  var origin = new URL(script.src, location.href).origin;
  var color = /^#[0-9a-fA-F]{6}$/.test(script.getAttribute("data-color") || "")
    ? script.getAttribute("data-color") : "#2563eb";
  var side = script.getAttribute("data-position") === "left" ? "left" : "right";
  var frame = null;

  var button = document.createElement("button");
  button.type = "button";
  button.setAttribute("aria-label", "Open the chat");
  button.setAttribute("aria-expanded", "false");
  button.setAttribute("data-flowdeck-bubble", token);
  button.style.cssText = "position:fixed;bottom:20px;" + side + ":20px;width:56px;height:56px;" +
    "border-radius:50%;border:0;background:" + color + ";color:#fff;cursor:pointer;" +
    "box-shadow:0 4px 14px rgba(0,0,0,.25);z-index:2147483000;display:grid;place-items:center;padding:0";
  var chatIcon = '<svg width="26" height="26" viewBox="0 0 24 24" fill="none" stroke="currentColor" ' +
    'stroke-width="2" aria-hidden="true"><path d="M21 12a8 8 0 0 1-11.6 7.1L4 20l1-4.6A8 8 0 1 1 21 12z"/></svg>';
  var closeIcon = '<svg width="22" height="22" viewBox="0 0 24 24" fill="none" stroke="currentColor" ' +
    'stroke-width="2.4" aria-hidden="true"><path d="M6 6l12 12M18 6L6 18"/></svg>';
  button.innerHTML = chatIcon;

  function place() {
    if (!frame) return;
    var small = window.innerWidth < 480;
    frame.style.cssText = "position:fixed;z-index:2147483000;border:0;background:#fff;" +
      "box-shadow:0 8px 30px rgba(0,0,0,.25);" + (small
        ? "inset:0;width:100%;height:100%;border-radius:0"
        : "bottom:88px;" + side + ":20px;width:380px;height:min(600px,calc(100vh - 110px));border-radius:12px");
  }

  function toggle(open) {
    if (open && !frame) {
      frame = document.createElement("iframe");
      frame.src = origin + "/embed/" + encodeURIComponent(token) + "/";
      frame.title = "Chat";
      frame.setAttribute("data-flowdeck-chat", token);
      frame.setAttribute("allow", "clipboard-write");
      document.body.appendChild(frame);
      window.addEventListener("resize", place);
    }
    if (!frame) return;
    place();
    frame.style.display = open ? "block" : "none";
    button.innerHTML = open ? closeIcon : chatIcon;
    button.setAttribute("aria-expanded", String(open));
    button.setAttribute("aria-label", open ? "Close the chat" : "Open the chat");
  }

  button.addEventListener("click", function () {
    toggle(button.getAttribute("aria-expanded") !== "true");
  });

  function mount() {
    document.body.appendChild(button);
    if (script.getAttribute("data-open") === "true") toggle(true);
  }
  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);
})();
