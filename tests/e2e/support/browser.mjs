// Drives Debian's Chromium (playwright-core) through a URL the way a user would: vault-mcp's Connect page
// ("Continue"), the provider's login and consent pages, and back to vault-mcp's result page.
// Usage: node browser.mjs --url URL [--user alice] [--deny] [--cancel] [--no-continue] [--shots DIR] [--prefix NAME]
//   [--stop-at-callback] (capture the callback URL without loading it, to replay or tamper with it)
// Prints one JSON line: {final_url, title, text, callback_url, consent_scopes, screenshots: [...]}.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const argv = process.argv.slice(2);
const arg = (k, d) => { const i = argv.indexOf(`--${k}`); return i < 0 ? d : (argv[i + 1] && !argv[i + 1].startsWith('--') ? argv[i + 1] : true); };
const url = arg('url');
const user = arg('user', 'alice');
const shots = arg('shots');
const prefix = arg('prefix', 'connect');
const out = { screenshots: [] };
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vault-e2e-chromium-'));
const ctx = await chromium.launchPersistentContext(dir, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const shot = async (page, name) => {
  if (!shots) return;
  const f = path.join(shots, `${prefix}-${name}.png`);
  await page.screenshot({ path: f, fullPage: true }); out.screenshots.push(f);
};
try {
  const page = ctx.pages()[0] || await ctx.newPage();
  page.on('request', (r) => { if (r.isNavigationRequest() && r.url().includes('/oauth/callback')) out.callback_url ||= r.url(); });
  if (arg('stop-at-callback')) {
    await page.route('**/oauth/callback**', (route) => { out.callback_url = route.request().url(); route.abort(); });
  }
  await page.goto(url);
  await shot(page, '1-vault-page');
  if (arg('cancel')) {
    await Promise.all([page.waitForLoadState(), page.click('#cancel')]);
  } else if (!arg('no-continue') && await page.locator('button[id^="continue-"]').count()) {
    await Promise.all([page.waitForNavigation(), page.locator('button[id^="continue-"]').first().click()]);
    if (await page.locator('#username').count()) {
      await page.fill('#username', user); await page.fill('#password', 'password');
      await Promise.all([page.waitForNavigation(), page.click('#submit')]);
    }
    if (await page.locator('#allow').count()) {
      out.consent_scopes = await page.locator('#scopes li').allTextContents();
      await shot(page, '2-provider-consent');
      await Promise.all([page.waitForNavigation({ waitUntil: 'commit' }).catch(() => {}), page.click(arg('deny') ? '#deny' : '#allow')]);
    }
    await page.waitForLoadState().catch(() => {});
  }
  out.final_url = page.url();
  out.title = await page.title().catch(() => '');
  out.text = (await page.locator('body').innerText().catch(() => '')).slice(0, 2000);
  await shot(page, '3-result');
} catch (e) {
  out.error = String(e);
} finally {
  await ctx.close();
  fs.rmSync(dir, { recursive: true, force: true });
}
console.log(JSON.stringify(out));
process.exit(out.error ? 1 : 0);
