// Drives Debian's Chromium (playwright-core) through a URL the way a user would: vault-mcp's Connect page
// ("Continue"), the provider's login and consent pages, and back to vault-mcp's result page.
// Usage: node browser.mjs --url URL [--user alice] [--deny] [--deny-client PREFIX] [--deny-call] [--cancel] [--no-continue] [--approve-call] [--shots DIR] [--prefix NAME]
//   [--delegate] (tick every `input[id^="delegate-"]` checkbox on vault-mcp's Connect page before Continue; the
//   result's `delegate_boxes` counts the boxes found and ticked, and `delegate_labels` holds their labels)
//   [--stop-at-callback] (capture the callback URL without loading it, to replay or tamper with it)
//   [--fill NAME=VALUE]... (before Continue, type VALUE into every field named NAME on vault-mcp's page, e.g. the
//   key a user enters on a managed-secret Connect page; the result's `filled` lists the names found)
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
const fills = argv.flatMap((a, i) => (a === '--fill' && argv[i + 1] ? [argv[i + 1].split(/=(.*)/s).slice(0, 2)] : []));
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
  out.callback_urls = [];
  page.on('request', (r) => {
    if (r.isNavigationRequest() && r.url().includes('/oauth/callback')) { out.callback_url ||= r.url(); out.callback_urls.push(r.url()); }
  });
  await page.goto(url);
  await shot(page, '1-vault-page');
  // Click through whatever page comes up, like a user would, until none of the known pages is left.
  for (let step = 0; step < 8; step += 1) {
    if (arg('cancel') && await page.locator('#cancel').count()) {
      await Promise.all([page.waitForLoadState(), page.click('#cancel')]);
      break;
    }
    if (!arg('no-continue') && await page.locator('button[id^="continue-"]').count()) {
      const boxes = page.locator('input[type="checkbox"][id^="delegate-"]');
      out.delegate_boxes = await boxes.count();
      out.delegate_labels = [];
      for (let i = 0; i < out.delegate_boxes; i += 1) {
        const id = await boxes.nth(i).getAttribute('id');
        out.delegate_labels.push((await page.locator(`label[for="${id}"]`).allTextContents()).join(' ').trim()
          || (await boxes.nth(i).evaluate((el) => el.closest('label')?.innerText || '')).trim());
        if (arg('delegate')) await boxes.nth(i).check();
      }
      if (arg('delegate')) await shot(page, '1b-delegate-ticked');
      for (const [name, value] of fills) {
        const fields = page.locator(`[name="${name}"]`);
        if (await fields.count()) { await fields.first().fill(value); (out.filled ||= []).push(name); }
      }
      await Promise.all([page.waitForNavigation(), page.locator('button[id^="continue-"]').first().click()]);
    } else if (await page.locator('#approve-client').count()) {
      // vault-mcp's own consent for an MCP client (oauth identity mode)
      await shot(page, '2-client-consent');
      await Promise.all([page.waitForNavigation({ waitUntil: 'commit' }).catch(() => {}), page.click(arg('deny') ? '#deny-client' : '#approve-client')]);
      await page.waitForLoadState().catch(() => {});
    } else if (arg('approve-call') && await page.locator('#approve').count()) {
      // vault-mcp's approval page for a call a policy holds
      await shot(page, '2-approval');
      // --deny-call declines the held call only (the sign-in before it is allowed)
      await Promise.all([page.waitForNavigation(), page.click(arg('deny') || arg('deny-call') ? '#deny' : '#approve')]);
    } else if (await page.locator('button[form="op.deviceConfirmForm"]').count()) {
      // oidc-provider's device flow: confirm the code shown on the device
      await Promise.all([page.waitForNavigation(), page.click('button[form="op.deviceConfirmForm"]')]);
    } else if (await page.locator('#username').count()) {
      await page.fill('#username', user); await page.fill('#password', 'password');
      await Promise.all([page.waitForNavigation(), page.click('#submit')]);
    } else if (await page.locator('#allow').count()) {
      out.consent_scopes = await page.locator('#scopes li').allTextContents();
      await shot(page, '2-provider-consent');
      if (arg('stop-at-callback')) {
        // Submit consent through the context's request client (same cookies) and follow the redirects by hand,
        // stopping before the callback, so a test can tamper with it or replay it.
        const action = new URL(await page.locator('form:has(#allow)').getAttribute('action'), page.url()).href;
        let r = await page.request.post(action, { maxRedirects: 0 });
        while ([302, 303].includes(r.status())) {
          const next = new URL(r.headers().location, r.url()).href;
          if (next.includes('/oauth/callback')) { out.callback_url = next; break; }
          r = await page.request.get(next, { maxRedirects: 0 });
        }
        throw Object.assign(new Error('stopped'), { stopped: true });
      }
      // --deny-client PREFIX denies only the consent of clients whose id starts with PREFIX (e.g. the
      // provider's consent, not the vault's own sign-in at the same IdP).
      const client = (await page.locator('#client').textContent().catch(() => '')) || '';
      const deny = arg('deny') === true || (typeof arg('deny-client') === 'string' && client.startsWith(arg('deny-client')));
      await Promise.all([page.waitForNavigation({ waitUntil: 'commit' }).catch(() => {}), page.click(deny ? '#deny' : '#allow')]);
      await page.waitForLoadState().catch(() => {});
    } else {
      break;
    }
  }
  out.final_url = page.url();
  out.title = await page.title().catch(() => '');
  out.text = (await page.locator('body').innerText().catch(() => '')).slice(0, 2000);
  await shot(page, '3-result');
} catch (e) {
  if (!e.stopped) out.error = String(e);
} finally {
  await ctx.close();
  fs.rmSync(dir, { recursive: true, force: true });
}
console.log(JSON.stringify(out));
process.exit(out.error ? 1 : 0);
