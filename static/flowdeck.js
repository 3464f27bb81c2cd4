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
