// Drives the HyperLoRA accordion in headless Chromium (playwright-core): open, upload, preview,
// move the weight, screenshot. Usage: node browser_accordion.js URL PHOTO SCREENSHOT
const { chromium } = require("playwright-core");

(async () => {
  const [url, photo, screenshot] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const result = {};
  try {
    const page = await browser.newPage({ viewport: { width: 1200, height: 1000 } });
    await page.goto(url);
    await page.getByText("HyperLoRA", { exact: true }).first().click();
    await page.getByText("Weight", { exact: true }).first().waitFor({ timeout: 15000 });
    await page.locator("#hl_images input[type=file]").setInputFiles(photo);
    await page.locator("#hl_gallery img").first().waitFor({ timeout: 30000 });
    const status = page.locator("#hl_status").last();
    await page.getByText("encoded").first().waitFor({ timeout: 30000 });
    result.status = await status.innerText();
    const weight = page.locator("#hl_weight input[type=number]");
    await weight.fill("1.2");
    await weight.press("Enter");
    await page.waitForTimeout(300);
    result.weight = await page.locator("#hl_weight input[type=range]").inputValue();
    await page.screenshot({ path: screenshot, fullPage: true });
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(result));
})().catch((error) => { console.error(error); process.exit(1); });
