// Small page behaviours without inline script (the Content-Security-Policy allows none).
// <form data-confirm="Question?">: ask before submitting.
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});

// <button data-copy> next to a <code>: copy its text, and say so on the button.
document.addEventListener("click", async (event) => {
  const button = event.target instanceof Element ? event.target.closest("button[data-copy]") : null;
  const code = button && button.parentElement ? button.parentElement.querySelector("code") : null;
  if (!code) return;
  try {
    await navigator.clipboard.writeText(code.textContent.trim());
    button.textContent = "Copied";
  } catch {
    const range = document.createRange();  // no clipboard permission: select it instead
    range.selectNodeContents(code);
    window.getSelection().removeAllRanges();
    window.getSelection().addRange(range);
    button.textContent = "Selected: press Ctrl+C";
  }
});

// The theme toggle: system -> light -> dark -> system. Saved in this browser only; the
// editor island follows the <html data-theme> attribute as it changes.
const THEMES = ["system", "light", "dark"];
const THEME_LABEL = { system: "Theme: system", light: "Theme: light", dark: "Theme: dark" };

function currentTheme() {
  const theme = document.documentElement.dataset.theme;
  return theme === "light" || theme === "dark" ? theme : "system";
}

function applyTheme(theme) {
  if (theme === "system") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
  try {
    if (theme === "system") localStorage.removeItem("flowdeck-theme");
    else localStorage.setItem("flowdeck-theme", theme);
  } catch {
    /* not saved: it still applies to this page */
  }
  for (const button of document.querySelectorAll("[data-theme-toggle]")) {
    button.textContent = THEME_LABEL[theme];
    button.dataset.theme = theme;
  }
}

applyTheme(currentTheme());
document.addEventListener("click", (event) => {
  const button = event.target instanceof Element ? event.target.closest("[data-theme-toggle]") : null;
  if (!button) return;
  applyTheme(THEMES[(THEMES.indexOf(currentTheme()) + 1) % THEMES.length]);
});
