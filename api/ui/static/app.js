// provenroute admin: progressive enhancement only; every page works without it.
"use strict";
(function () {
  const ui = "/admin/ui";

  // ---- outcome of a posted command: poll until accepted or rejected ----------------------
  function watchCommand(box) {
    const id = box.dataset.command;
    if (!id || box.dataset.status !== "pending") return;
    let tries = 0;
    const tick = async () => {
      tries += 1;
      try {
        const r = await fetch(`${ui}/commands/${encodeURIComponent(id)}`, {
          headers: { Accept: "application/json" }, credentials: "same-origin",
        });
        if (r.ok) {
          const s = await r.json();
          if (s.status !== "pending") {
            box.dataset.status = s.status;
            box.className = `outcome outcome-${s.status}`;
            box.querySelector(".outcome-status").textContent =
              s.status === "accepted" ? "Accepted" : "Rejected";
            box.querySelector(".outcome-text").textContent = s.status === "accepted"
              ? "The worker accepted it." : (s.reason || "The worker rejected it.");
            if (s.status === "accepted" && box.closest("main").querySelector("#config-form")) {
              // Show the saved config's id and time.
              setTimeout(() => { window.location.replace(window.location.href); }, 500);
            }
            return;
          }
        }
      } catch (e) { /* retry */ }
      if (tries < 240) setTimeout(tick, tries < 20 ? 500 : 2000);
    };
    setTimeout(tick, 300);
  }

  // ---- a run's live progress over server-sent events -------------------------------------
  function watchRun(section) {
    if (section.dataset.status === "completed" || section.dataset.status === "failed") return;
    const run = section.dataset.run;
    const command = section.dataset.command;
    const url = `${ui}/runs/${encodeURIComponent(run)}/stream` +
      (command ? `?command=${encodeURIComponent(command)}` : "");
    const bar = section.querySelector("#run-progress");
    const status = section.querySelector("#run-status");
    const counts = section.querySelector("#run-counts");
    const show = (p) => {
      bar.value = p.percent;
      status.textContent = p.status;
      status.className = `status status-${p.status}`;
      section.dataset.status = p.status;
      if (p.expected !== null && p.expected !== undefined) {
        counts.textContent = `${p.done} of ${p.expected} case results` +
          (p.models_carried ? ` (${p.models_carried} model(s) carried)` : "");
      } else if (p.status === "pending") {
        counts.textContent = "waiting for the worker to start the run";
      } else {
        counts.textContent = "fanning out";
      }
    };
    if (!window.EventSource) { setTimeout(() => window.location.reload(), 3000); return; }
    const es = new EventSource(url);
    es.addEventListener("progress", (e) => {
      const p = JSON.parse(e.data);
      if (section.dataset.status === "pending" && p.status === "running" &&
          !document.querySelector("#facts-h")) {
        // The run now exists in the projection: render its facts and models server-side.
        es.close();
        window.location.replace(`${ui}/runs/${encodeURIComponent(run)}`);
        return;
      }
      show(p);
    });
    es.addEventListener("completed", (e) => {
      show(JSON.parse(e.data));
      es.close();
      // Reload without the command id: the summaries render server-side.
      window.location.replace(`${ui}/runs/${encodeURIComponent(run)}`);
    });
    es.addEventListener("rejected", (e) => {
      es.close();
      const reason = JSON.parse(e.data).reason || "rejected";
      status.textContent = "rejected";
      status.className = "status status-rejected";
      counts.textContent = reason;
      section.dataset.status = "rejected";
    });
  }

  // ---- config editor: client-side hints and decider rows ---------------------------------
  function enhanceConfig(form) {
    const hintFor = (input) => {
      let hint = input.parentElement.querySelector(".client-hint");
      if (!hint) {
        hint = document.createElement("p");
        hint.className = "client-hint";
        hint.id = `${input.id}-client`;
        hint.setAttribute("aria-live", "polite");
        input.parentElement.appendChild(hint);
        input.setAttribute("aria-describedby",
          `${input.getAttribute("aria-describedby") || ""} ${hint.id}`.trim());
      }
      return hint;
    };
    const check = (input) => {
      if (!input.willValidate) return;
      const hint = hintFor(input);
      hint.textContent = input.validity.valid ? "" : `Hint: ${input.validationMessage}`;
    };
    form.querySelectorAll("input, textarea").forEach((input) => {
      input.addEventListener("input", () => check(input));
      input.addEventListener("blur", () => check(input));
    });
    // Decider rows: hide all but one spare blank row; "Add" reveals the next.
    const rows = Array.from(form.querySelectorAll(".decider-row"));
    const add = form.querySelector("#add-decider");
    const blank = (row) => !row.querySelector("input").value.trim();
    let spare = 0;
    rows.forEach((row) => {
      const remove = row.querySelector(".remove-row");
      remove.hidden = false;
      remove.addEventListener("click", () => {
        row.querySelector("input").value = "";
        row.hidden = true;
        add.focus();
      });
      if (blank(row)) { spare += 1; if (spare > 1) row.hidden = true; }
    });
    add.hidden = false;
    add.addEventListener("click", () => {
      let next = rows.find((r) => r.hidden);
      if (!next) {
        // Every row is in use: clone the last one with the next index.
        const last = rows[rows.length - 1];
        const i = rows.length;
        next = last.cloneNode(true);
        next.querySelectorAll("[id], [name], [for], [aria-describedby]").forEach((el) => {
          for (const attr of ["id", "name", "for", "aria-describedby"]) {
            const v = el.getAttribute(attr);
            if (v) el.setAttribute(attr, v.replace(/_\d+/g, `_${i}`));
          }
        });
        next.querySelectorAll("label").forEach((l) => {
          l.textContent = l.textContent.replace(/\d+$/, String(i + 1));
        });
        next.querySelectorAll(".field-error, .client-hint").forEach((e) => {
          e.textContent = ""; e.hidden = e.classList.contains("field-error");
        });
        next.querySelectorAll(".invalid").forEach((e) => e.classList.remove("invalid"));
        next.querySelectorAll("[aria-invalid]").forEach((e) => e.removeAttribute("aria-invalid"));
        const input = next.querySelector("input");
        input.value = "";
        const remove = next.querySelector(".remove-row");
        remove.setAttribute("aria-label", `Remove decider model ${i + 1}`);
        remove.addEventListener("click", () => {
          input.value = ""; next.hidden = true; add.focus();
        });
        last.parentElement.appendChild(next);
        rows.push(next);
      }
      next.hidden = false;
      next.querySelector("input").focus();
    });
    // On a server rejection, focus the first invalid field.
    const invalid = form.querySelector("[aria-invalid='true']");
    if (invalid) invalid.focus();
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll(".outcome[data-command]").forEach(watchCommand);
    const progress = document.querySelector("#progress[data-run]");
    if (progress) watchRun(progress);
    const form = document.querySelector("#config-form");
    if (form) enhanceConfig(form);
  });
})();
