"use strict";
// The shop page: places orders over HTTP, and follows every order event over SSE.
const STATUS = {
  "orders.placed": "placed",
  "orders.stock_reserved": "reserved",
  "orders.payment_captured": "paid",
  "orders.confirmed": "confirmed",
  "orders.failed": "failed",
};
// A failed payment may be replayed from the dead-letter queue, and then go through.
const RANK = { placed: 0, reserved: 1, failed: 1.5, paid: 2, confirmed: 3 };

function row(orderId) {
  let tr = document.querySelector(`tr[data-order="${CSS.escape(orderId)}"]`);
  if (!tr) {
    tr = document.createElement("tr");
    tr.dataset.order = orderId;
    for (const name of ["id", "item", "status", "reason"]) {
      const td = document.createElement("td");
      td.dataset.field = name;
      tr.appendChild(td);
    }
    const link = document.createElement("a");
    link.href = `/orders/${encodeURIComponent(orderId)}`;
    link.textContent = orderId;
    tr.querySelector('[data-field="id"]').appendChild(link);
    document.getElementById("orders").prepend(tr);
  }
  return tr;
}

function show(orderId, { item, quantity, status, reason }) {
  const tr = row(orderId);
  if (item) tr.querySelector('[data-field="item"]').textContent = `${quantity} × ${item}`;
  const cell = tr.querySelector('[data-field="status"]');
  const current = cell.textContent;
  // Events can overtake each other: never step back.
  if (status && (!current || RANK[status] >= RANK[current])) {
    cell.textContent = status;
    cell.className = `status ${status}`;
    tr.dataset.status = status;
  }
  if (reason || status === "paid") {
    tr.querySelector('[data-field="reason"]').textContent = reason || "";
  }
}

function logEvent(name, data) {
  const li = document.createElement("li");
  const time = new Date().toLocaleTimeString();
  li.textContent = `${time} ${name} ${data.order_id}${data.reason ? ": " + data.reason : ""}`;
  const list = document.getElementById("events");
  list.prepend(li);
  while (list.children.length > 100) list.lastChild.remove();
}

function follow() {
  const stream = new EventSource("/live/orders");
  const state = document.getElementById("stream-state");
  stream.onopen = () => { state.textContent = "(connected)"; document.body.dataset.live = "yes"; };
  stream.onerror = () => { state.textContent = "(reconnecting)"; };
  for (const name of Object.keys(STATUS)) {
    stream.addEventListener(name, (event) => {
      const data = JSON.parse(event.data);
      logEvent(name, data);
      show(data.order_id, { ...data, status: STATUS[name] });
    });
  }
}

async function load() {
  const response = await fetch("/orders");
  if (!response.ok) return;
  for (const order of (await response.json()).reverse()) show(order.order_id, order);
}

document.getElementById("order-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const body = {
    item: form.get("item"),
    quantity: Number(form.get("quantity")),
    card: form.get("card"),
  };
  const error = document.getElementById("form-error");
  error.textContent = "";
  const response = await fetch("/orders", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const answer = await response.json();
  if (!response.ok) {
    error.textContent = typeof answer.detail === "string" ? answer.detail : "invalid order";
    return;
  }
  show(answer.order_id, { ...body, status: answer.status });
  document.body.dataset.lastOrder = answer.order_id;
});

follow();
load();
