// What a new user sees of the HyperLoRA accordion in a real WebUI's txt2img tab (headless
// Chromium, playwright-core): open it, read the model list and hints, upload a photo, flip the
// face choice, screenshot it (and the tab before); then open "Saved identities" and screenshot
// that section.
// Prints one JSON object of what was seen.
// Usage: node browser_webui.js URL ELEM_PREFIX ACCORDION_ID PHOTO PAGE_PNG ACCORDION_PNG
//        IDENTITIES_PNG
const { chromium } = require("playwright-core");

const ENCODE_MS = 600000; // the first preview loads the encoders on a CPU

(async () => {
  const [url, prefix, accordionId, photo, pagePng, accordionPng, identitiesPng] =
    process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const result = {};
  const id = (item) => `#${prefix}${item}`;
  const visible = (item) => page.locator(id(item)).first().isVisible();
  const text = async (item) => (await visible(item)) ? page.locator(id(item)).first().innerText() : "";
  let page;
  try {
    page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    await page.goto(url, { timeout: 120000 });
    const accordion = page.locator(`#${accordionId}`).first();
    await accordion.waitFor({ state: "visible", timeout: 120000 });
    await accordion.scrollIntoViewIfNeeded();
    result.closedText = await accordion.innerText();
    await page.screenshot({ path: pagePng }); // the tab as it first looks, the accordion closed
    await accordion.locator(".label-wrap").first().click();
    const model = page.locator(id("model")).first();
    await model.waitFor({ state: "visible", timeout: 15000 });
    const enable = page.locator(`#${accordionId}-checkbox input[type=checkbox]`);
    result.enabledByOpening = (await enable.count()) ? await enable.first().isChecked() : null;
    result.setupVisible = await visible("setup");
    result.model = await model.locator("input").first().inputValue();
    result.modelText = await model.innerText();
    await model.locator("input").first().click();
    const options = model.locator("ul.options li");
    await options.first().waitFor({ timeout: 15000 });
    result.modelOptions = (await options.allInnerTexts())
      .map((option) => option.replace(/^\s*✓\s*/, "").trim()); // ✓ marks the chosen one
    await page.keyboard.press("Escape");
    result.weight = await page.locator(`${id("weight")} input[type=number]`).first().inputValue();
    result.weightText = await text("weight");
    result.faceIndexVisible = await visible("face_index");

    await page.locator(`${id("images")} input[type=file]`).first().setInputFiles(photo);
    const status = page.locator(id("status")).last();
    await page.waitForFunction((selector) => [...document.querySelectorAll(selector)]
      .some((element) => /encoded|error|fail|not /i.test(element.innerText)),
      id("status"), { timeout: ENCODE_MS });
    result.status = await status.innerText();
    result.caption = await text("gallery");

    const face = page.locator(id("face")).first();
    await face.getByText("Index", { exact: true }).click();
    await page.locator(id("face_index")).first().waitFor({ state: "visible", timeout: 15000 });
    result.faceIndexShown = await visible("face_index");
    await face.getByText("Largest", { exact: true }).click();
    await page.locator(id("face_index")).first().waitFor({ state: "hidden", timeout: 15000 });
    // Each face change previews again: let the last one finish before the screenshot.
    await page.waitForTimeout(1000);
    await page.waitForFunction((selector) => !/processing \||queue:/
      .test(document.querySelector(selector).innerText), `#${accordionId}`, { timeout: ENCODE_MS });
    result.statusAfterFace = await status.innerText();

    result.adetailerVisible = await visible("adetailer");
    result.adetailerNote = await text("adetailer_note");
    result.adFixVisible = await visible("ad_fix");
    result.adUndoVisible = await visible("ad_undo");
    result.accordionText = await accordion.innerText();
    await page.waitForTimeout(500);
    await accordion.screenshot({ path: accordionPng });

    const identities = page.locator(id("identities")).first();
    await identities.locator(".label-wrap").first().click();
    const info = page.locator(id("identity_info")).last();
    await info.waitFor({ state: "visible", timeout: 15000 });
    const cards = page.locator(`${id("identity_gallery")} img`);
    await page.waitForTimeout(1000); // the gallery's value is read when the page loads
    result.cards = await cards.count();
    result.identityInfo = await info.innerText();
    if (result.cards > 0) {
      await cards.first().click();
      await info.getByText("likeness reference").waitFor({ timeout: 15000 });
      result.identityInfo = await info.innerText();
    }
    await identities.scrollIntoViewIfNeeded();
    await identities.screenshot({ path: identitiesPng });
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(result));
})().catch((error) => { console.error(error); process.exit(1); });
