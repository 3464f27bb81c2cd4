// The member's colour theme, applied before the first paint: "light", "dark", or nothing
// (follow the system setting, prefers-color-scheme). The toggle lives in flowdeck.js.
(() => {
  try {
    const theme = localStorage.getItem("flowdeck-theme");
    if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
  } catch {
    /* storage unavailable: follow the system */
  }
})();
