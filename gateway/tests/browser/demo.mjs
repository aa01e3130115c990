// The demo page in Debian's headless chromium, driven by playwright-core (scripts/e2e):
// a buyer signs in, fills the cart, places an order and sees it listed; a second buyer
// does not see it. A screenshot of the page goes to the directory given.
//   node gateway/tests/browser/demo.mjs <gateway url> <screenshot dir>
import { mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

// playwright-core is installed outside the clone (scripts/e2e), in PLAYWRIGHT_HOME.
const require = createRequire(join(process.env.PLAYWRIGHT_HOME ?? ".", "package.json"));
const { chromium } = require("playwright-core");

const [url, shots] = process.argv.slice(2);
if (!url || !shots) throw new Error("usage: demo.mjs <gateway url> <screenshot dir>");
mkdirSync(shots, { recursive: true });
const within = { timeout: 30_000 };

function check(condition, what) {
  if (!condition) throw new Error(`browser test: ${what}`);
  console.log(`  ok: ${what}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  // As root (CI), chromium runs only without its sandbox.
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
try {
  const buyer = await browser.newPage({ viewport: { width: 1100, height: 1400 } });
  const errors = [];
  buyer.on("pageerror", (e) => errors.push(String(e)));
  buyer.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  await buyer.goto(url, within);
  await buyer.selectOption("#user", "1");
  await buyer.click("#login button[type=submit]");
  await buyer.waitForSelector("#goods tbody tr", within);
  check(await buyer.locator("#goods tbody tr").count() >= 1, "the goods are listed with their stock");
  const stockBefore = Number(await buyer.locator("#goods tbody tr").first().locator("td.stock").innerText());

  await buyer.locator("#goods tbody tr").first().locator("button.add").click();
  await buyer.waitForSelector("#cart tbody tr", within);
  check(await buyer.locator("#cart tbody tr").count() === 1, "the goods is in the cart");

  const ordersBefore = await buyer.locator("#orders tbody tr").count();
  await buyer.click("#place-button");
  await buyer.waitForFunction(
    (n) => document.querySelectorAll("#orders tbody tr").length > n, ordersBefore, within);
  const row = buyer.locator("#orders tbody tr").first();
  const orderSn = await row.getAttribute("data-order-sn");
  check(Boolean(orderSn), `the order ${orderSn} is listed`);
  check((await row.innerText()).includes("WAIT_BUYER_PAY"), "it waits for the payment");
  check(await buyer.locator("#cart tbody tr").count() === 0, "the cart is empty after the order");
  await buyer.waitForFunction(
    (before) => Number(document.querySelector("#goods tbody tr td.stock").innerText) < before,
    stockBefore, within);
  check(true, "the stock went down");

  await row.locator("button.pay").click();
  await buyer.waitForFunction(
    (sn) => document.querySelector(`#orders tr[data-order-sn="${sn}"]`)?.innerText.includes("TRADE_SUCCESS"),
    orderSn, within);
  check(true, "paid on the page");
  await buyer.screenshot({ path: join(shots, "demo-page.png"), fullPage: true });
  check(errors.length === 0, `no script errors (${errors.join("; ")})`);

  const other = await browser.newPage();
  await other.goto(url, within);
  await other.selectOption("#user", "2");
  await other.click("#login button[type=submit]");
  await other.waitForSelector("#goods tbody tr", within);
  await other.waitForFunction(() => !document.querySelector("#orders-empty").hidden
    || document.querySelectorAll("#orders tbody tr").length > 0, null, within);
  check(await other.locator(`#orders tr[data-order-sn="${orderSn}"]`).count() === 0,
    "a second buyer does not see the first buyer's order");
  await other.screenshot({ path: join(shots, "demo-page-other-buyer.png"), fullPage: true });
  console.log(`browser test passed; screenshots in ${shots}`);
} finally {
  await browser.close();
}
