// The demo shop page: plain JavaScript against the gateway's own /v1 API, no framework,
// no build step. Every action starts a W3C trace in the browser (a traceparent header),
// so the log line below the page names the trace that runs through both services.
"use strict";

const state = { token: null, user: null, goods: new Map(), timer: null };
const $ = (selector) => document.querySelector(selector);

function hex(bytes) {
  return Array.from(crypto.getRandomValues(new Uint8Array(bytes)), (b) =>
    b.toString(16).padStart(2, "0")).join("");
}

function money(cents) {
  return (Number(cents) / 100).toFixed(2);
}

function log(text, { bad = false, trace = null } = {}) {
  const item = document.createElement("li");
  item.textContent = `${new Date().toLocaleTimeString()}  ${text}`;
  if (trace) {
    const code = document.createElement("code");
    code.textContent = `  trace ${trace}`;
    item.append(code);
  }
  if (bad) item.className = "bad";
  $("#log").prepend(item);
}

// One call to the API: JSON in and out, the bearer token, a fresh trace. A problem+json
// answer becomes an Error carrying the problem.
async function api(method, path, { body, headers = {}, quiet = false } = {}) {
  const trace = hex(16);
  const request = {
    method,
    headers: { traceparent: `00-${trace}-${hex(8)}-01`, ...headers },
  };
  if (state.token) request.headers.authorization = `Bearer ${state.token}`;
  if (body !== undefined) {
    request.headers["content-type"] = "application/json";
    request.body = JSON.stringify(body);
  }
  const response = await fetch(path, request);
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const problem = data || { title: response.statusText, detail: "" };
    const error = new Error(`${problem.title}: ${problem.detail}` +
      (problem.reason ? ` (${problem.reason})` : ""));
    error.problem = problem;
    error.trace = trace;
    throw error;
  }
  if (!quiet) log(`${method} ${path} → ${response.status}`, { trace });
  return data;
}

async function signIn(event) {
  event.preventDefault();
  const user = Number($("#user").value);
  const { token } = await api("POST", "/v1/dev/token", { body: { user_id: user }, quiet: true });
  state.token = token;
  state.user = user;
  $("#whoami").textContent = `signed in as user ${user}`;
  $("#shop").hidden = false;
  log(`signed in as user ${user}`);
  await refresh();
  clearInterval(state.timer);
  state.timer = setInterval(() => refresh().catch(() => {}), 2000);
}

async function refresh() {
  await Promise.all([showGoods(), showCart(), showOrders()]);
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function button(label, onClick, className) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  if (className) b.className = className;
  b.addEventListener("click", () => onClick().catch(report));
  return b;
}

async function showGoods() {
  const page = await api("GET", "/v1/goods?page_size=50", { quiet: true });
  const rows = page.goods.map((goods) => {
    state.goods.set(goods.id, goods);
    const tr = document.createElement("tr");
    tr.dataset.goodsId = goods.id;
    const actions = cell("", "actions");
    actions.append(button("Add", () => addToCart(goods.id), "add"));
    tr.append(cell(goods.name), cell(money(goods.price_cents), "num"),
      cell(String(goods.stock), "num stock"), actions);
    return tr;
  });
  $("#goods tbody").replaceChildren(...rows);
}

async function showCart() {
  const cart = await api("GET", "/v1/cart/items", { quiet: true });
  const rows = cart.items.map((line) => {
    const tr = document.createElement("tr");
    tr.dataset.goodsId = line.goods_id;
    const check = document.createElement("input");
    check.type = "checkbox";
    check.checked = line.checked;
    check.addEventListener("change", () =>
      api("PATCH", `/v1/cart/items/${line.goods_id}`, { body: { checked: check.checked } })
        .then(showCart).catch(report));
    const checkCell = cell("");
    checkCell.append(check);
    const actions = cell("", "actions");
    actions.append(button("Remove", async () => {
      await api("DELETE", `/v1/cart/items/${line.goods_id}`);
      await showCart();
    }));
    const name = state.goods.get(line.goods_id)?.name ?? `goods ${line.goods_id}`;
    tr.append(checkCell, cell(name), cell(String(line.nums), "num"), actions);
    return tr;
  });
  $("#cart tbody").replaceChildren(...rows);
  $("#cart-empty").hidden = rows.length > 0;
  $("#place-button").disabled = rows.length === 0;
}

async function showOrders() {
  const page = await api("GET", "/v1/orders?page_size=20", { quiet: true });
  const rows = page.orders.map((order) => {
    const tr = document.createElement("tr");
    tr.dataset.orderSn = order.order_sn;
    const status = cell("");
    const badge = document.createElement("span");
    badge.className = `status ${order.status}`;
    badge.textContent = order.status;
    status.append(badge);
    const actions = cell("", "actions");
    if (order.status === "WAIT_BUYER_PAY") {
      actions.append(
        button("Pay", async () => {
          await api("POST", `/v1/dev/orders/${order.order_sn}/pay`);
          await refresh();
        }, "primary pay"),
        button("Cancel", async () => {
          await api("POST", `/v1/orders/${order.order_sn}/cancel`);
          await refresh();
        }, "cancel"));
    }
    tr.append(cell(order.order_sn), status, cell(money(order.total_cents), "num"),
      cell(new Date(order.created_at).toLocaleString()), actions);
    return tr;
  });
  $("#orders tbody").replaceChildren(...rows);
  $("#orders-empty").hidden = rows.length > 0;
}

async function addToCart(goodsId) {
  await api("POST", "/v1/cart/items", { body: { goods_id: goodsId, nums: 1 } });
  await showCart();
}

// One Idempotency-Key per order the buyer means to place: a retry after a lost answer
// or a 503/504 sends the same key and gets the same order, never a second one.
let pendingKey = null;

async function placeOrder(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  pendingKey ??= crypto.randomUUID();
  const order = await api("POST", "/v1/orders", {
    body: Object.fromEntries(form.entries()),
    headers: { "idempotency-key": pendingKey },
  });
  pendingKey = null;
  log(`order ${order.order_sn} placed: ${money(order.total_cents)}, waiting for payment`);
  await refresh();
}

function report(error) {
  const problem = error.problem;
  const retry = problem && [409, 503, 504].includes(problem.status) && problem.reason !== "CART_EMPTY"
    ? " (you may retry)" : "";
  log(error.message + retry, { bad: true, trace: error.trace });
  if (problem && problem.status !== 503 && problem.status !== 504) pendingKey = null;
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login").addEventListener("submit", (e) => signIn(e).catch(report));
  $("#place").addEventListener("submit", (e) => placeOrder(e).catch(report));
});
