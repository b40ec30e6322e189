// Drives the HyperLoRA accordion in headless Chromium (playwright-core): open, upload, preview,
// move the weight, screenshot the accordion; then open "Saved identities", select a card and
// screenshot that section.
// Usage: node browser_accordion.js URL PHOTO ACCORDION_PNG IDENTITIES_PNG
const { chromium } = require("playwright-core");

(async () => {
  const [url, photo, accordionPng, identitiesPng] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const result = {};
  try {
    const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
    await page.goto(url);
    await page.getByText("HyperLoRA", { exact: true }).first().click();
    await page.getByText("Weight", { exact: true }).first().waitFor({ timeout: 15000 });
    result.faceIndexVisible = await page.locator("#hl_face_index").isVisible();
    await page.locator("#hl_images input[type=file]").setInputFiles(photo);
    await page.locator("#hl_gallery img").first().waitFor({ timeout: 30000 });
    const status = page.locator("#hl_status").last();
    await page.getByText("encoded").first().waitFor({ timeout: 30000 });
    result.status = await status.innerText();
    result.caption = await page.locator("#hl_gallery").innerText();
    const weight = page.locator("#hl_weight input[type=number]");
    await weight.fill("1.2");
    await weight.press("Enter");
    await page.waitForTimeout(300);
    result.weight = await page.locator("#hl_weight input[type=range]").inputValue();
    await page.getByText("far above").first().waitFor({ timeout: 15000 });
    result.weightStatus = await status.innerText();
    await weight.fill("0.8");
    await weight.press("Enter");
    await page.waitForTimeout(500);
    await page.locator("#hl_face").getByText("Index", { exact: true }).click();
    await page.locator("#hl_face_index").waitFor({ state: "visible", timeout: 15000 });
    result.faceIndexShown = await page.locator("#hl_face_index").isVisible();
    await page.locator("#hl_face").getByText("Largest", { exact: true }).click();
    await page.locator("#hl_face_index").waitFor({ state: "hidden", timeout: 15000 });
    await page.locator("#hl_enable input[type=checkbox]").check();
    await page.waitForTimeout(500);
    await page.locator("#hl_accordion").screenshot({ path: accordionPng });

    await page.getByText("Saved identities", { exact: true }).first().click();
    const cards = page.locator("#hl_identity_gallery img");
    await cards.first().waitFor({ timeout: 15000 });
    result.cards = await cards.count();
    await cards.first().click();
    const info = page.locator("#hl_identity_info").last();
    await info.getByText("likeness reference").waitFor({ timeout: 15000 });
    result.info = await info.innerText();
    await page.locator("#hl_identity_download").click();
    await page.waitForFunction(() => [...document.querySelectorAll("#hl_identity_file")]
      .some((element) => /alice\s*\.safetensors/.test(element.innerText)), null, { timeout: 15000 });
    await page.locator("#hl_identities").screenshot({ path: identitiesPng });
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(result));
})().catch((error) => { console.error(error); process.exit(1); });
