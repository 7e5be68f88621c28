// What both status pages share (lb-user's and backend-agent's): table
// helpers that write text nodes only (nothing from the document is parsed
// as HTML) and the refresh of /status.json every second.
"use strict";

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function table(headers) {
  const t = document.createElement("table");
  const head = t.createTHead().insertRow();
  for (const h of headers) {
    const th = document.createElement("th");
    th.textContent = h;
    head.appendChild(th);
  }
  return t;
}

function badge(parent, text, state) {
  const span = document.createElement("span");
  span.className = "state " + state;
  span.textContent = text;
  parent.appendChild(span);
  return span;
}

// Reads /status.json now and every second, and hands it to `render`.
function startRefresh(render) {
  async function refresh() {
    const updated = document.getElementById("updated");
    try {
      const answer = await fetch("/status.json", { cache: "no-store" });
      if (!answer.ok) throw new Error(`${answer.status} ${await answer.text()}`);
      render(await answer.json());
      updated.textContent = "updated " + new Date().toLocaleTimeString();
      updated.className = "";
    } catch (e) {
      updated.textContent = "not updated: " + e.message;
      updated.className = "stale";
    }
  }
  refresh();
  setInterval(refresh, 1000);
}
