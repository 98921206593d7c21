// C-SSRS skip logic in the browser: "No" to question 2 skips 3–5; "No" to 6 skips 6b.
// Skipped questions are cleared and disabled, so a corrected answer never leaves a dead end.
(function () {
  const skips = { q2: ["q3", "q4", "q5"], q6: ["q6_recent"] };
  function apply(form) {
    for (const [question, skipped] of Object.entries(skips)) {
      const chosen = form.querySelector(`input[name="cssrs_${question}"]:checked`);
      const skip = chosen && chosen.value === "no";
      for (const name of skipped) {
        for (const input of form.querySelectorAll(`input[name="cssrs_${name}"]`)) {
          if (skip) input.checked = false;
          input.disabled = skip;
        }
      }
    }
  }
  document.addEventListener("DOMContentLoaded", () => {
    for (const form of document.querySelectorAll("form")) {
      if (!form.querySelector('input[name="cssrs_q2"]')) continue;
      apply(form);
      form.addEventListener("change", (event) => {
        if (event.target.name && event.target.name.startsWith("cssrs_")) apply(form);
      });
    }
  });
})();
