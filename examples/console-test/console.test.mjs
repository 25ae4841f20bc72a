// Browser test of the keygate owner console (issue 9, docs/CONTRACT.md §2.3): Debian's
// chromium driven by playwright-core against a running demo stack (started by
// e2e/console_test.go, which sets the environment below).
//
//   CONSOLE_GATEWAY_URL  gateway base URL, e.g. http://127.0.0.1:8000   (required)
//   CONSOLE_URL          the console URL with its #fragment, as the demo prints it
//                        (default: built from the variables below)
//   CONSOLE_TOKEN        the workspace owner's JWT                      (required)
//   CONSOLE_WORKSPACE    workspace ID                                   (required)
//   CONSOLE_PORTAL_CODE  X-PORTAL-ACCESS-CODE the page sends            (required)
//   CONSOLE_PORTAL       portal name hint, default PARTNER
//   CONSOLE_ARTIFACTS    screenshot directory, default ./artifacts/ beside this file
//   CHROMIUM             browser binary, default /usr/bin/chromium
//   CONSOLE_EXPECT_NO_HANDOVER  when set: only check that a console served
//                        without --console-handover ignores the fragment
//
// It never downloads a browser. Exit status 0 means every step passed.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const env = (name, def) => {
  const v = process.env[name] || def;
  if (v === undefined) {
    console.error(`${name} is required`);
    process.exit(2);
  }
  return v;
};
const gateway = env('CONSOLE_GATEWAY_URL').replace(/\/+$/, '');
const token = env('CONSOLE_TOKEN');
const workspace = env('CONSOLE_WORKSPACE');
const portalCode = env('CONSOLE_PORTAL_CODE');
const portal = env('CONSOLE_PORTAL', 'PARTNER');
const artifacts = env('CONSOLE_ARTIFACTS', fileURLToPath(new URL('./artifacts/', import.meta.url)));
const executablePath = env('CHROMIUM', '/usr/bin/chromium');

mkdirSync(artifacts, { recursive: true });
const profile = mkdtempSync(join(tmpdir(), 'keygate-console-chromium-'));

let shot = 0;
let page;
const log = (msg) => console.log(`console-test: ${msg}`);
async function screenshot(name) {
  shot++;
  const file = join(artifacts, `${String(shot).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  log(`screenshot ${file}`);
}

// The product route, called from Node (not the page) with the key.
async function useKey(secret) {
  const res = await fetch(`${gateway}/orders/1`, { headers: { 'X-API-Key': secret } });
  let body = null;
  try { body = await res.json(); } catch { /* not JSON */ }
  return { status: res.status, code: body && body.code };
}

// Everything a secret must not remain in once its dialog is closed.
async function assertGone(secret, what) {
  const where = await page.evaluate((s) => {
    const found = [];
    if (document.documentElement.outerHTML.includes(s)) found.push('DOM');
    if (document.documentElement.innerText.includes(s)) found.push('text');
    for (const el of document.querySelectorAll('input, textarea')) if (el.value.includes(s)) found.push('field ' + el.id);
    for (const [n, st] of [['localStorage', localStorage], ['sessionStorage', sessionStorage]]) {
      for (let i = 0; i < st.length; i++) if ((st.getItem(st.key(i)) || '').includes(s)) found.push(n);
    }
    if (location.href.includes(s)) found.push('URL');
    return found;
  }, secret);
  assert.deepEqual(where, [], `${what}: the secret is still in ${where.join(', ')}`);
  assert.equal(await page.evaluate(() => localStorage.length), 0, 'the console wrote to localStorage');
}

// The secret dialog: focus inside, Escape ignored, Done only after the
// acknowledgement. Returns the secret it showed. With keyboard, only keys
// are used: Tab to the checkbox, Space, Tab to Done, Enter.
async function takeSecret(heading, name, keyboard = false) {
  const dialog = page.getByRole('dialog', { name: heading });
  await dialog.waitFor({ state: 'visible' });
  assert.ok(await page.evaluate(() => !!document.activeElement.closest('dialog[open]')), 'focus is not in the dialog');
  const secret = (await page.locator('#secret-value').textContent()).trim();
  assert.match(secret, /^sk_(live|test)_[0-9A-Za-z]{38}$/, 'secret shown in the dialog');
  await screenshot(`${name}-secret-dialog`);
  await page.keyboard.press('Escape');
  await page.keyboard.press('Escape'); // twice: Chromium forces a close watcher open on the second
  await page.waitForTimeout(200);
  assert.ok(await dialog.isVisible(), 'Escape closed the secret dialog before the acknowledgement');
  assert.ok(await page.getByRole('button', { name: 'Done' }).isDisabled(), 'Done is enabled before the acknowledgement');
  if (keyboard) {
    assert.equal(await page.evaluate(() => document.activeElement.id), 'copy', 'focus starts on Copy');
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'ack');
    await page.keyboard.press('Space');
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'secret-done');
    await screenshot(`${name}-acknowledged`);
    await page.keyboard.press('Enter');
  } else {
    await page.getByLabel('I have saved this secret somewhere safe.').check();
    await screenshot(`${name}-acknowledged`);
    await page.getByRole('button', { name: 'Done' }).click();
  }
  await dialog.waitFor({ state: 'hidden' });
  return secret;
}

async function main() {
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
    viewport: { width: 1360, height: 900 },
  });
  try {
    page = context.pages()[0] || await context.newPage();
    page.setDefaultTimeout(10_000);
    const problems = [];
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    // Chromium logs every 4xx answer as a console error; the API's own
    // rejections (the validation error below) are expected, anything else is not.
    page.on('console', (m) => {
      if (m.type() === 'error' && !/^Failed to load resource: the server responded with a status of 4\d\d/.test(m.text())) {
        problems.push(`console error: ${m.text()}`);
      }
    });

    if (process.env.CONSOLE_EXPECT_NO_HANDOVER) {
      // A sidecar without --console-handover (production): the fragment is
      // dropped from the URL unread; nothing is connected or stored.
      const url = `${gateway}/console/#` + new URLSearchParams({ token, workspace, portalCode, portal }).toString();
      const res = await page.goto(url);
      assert.equal(res.status(), 200);
      await page.locator('#connect-form').waitFor();
      await page.waitForFunction(() => location.hash === '');
      assert.equal(await page.evaluate(() => location.href), `${gateway}/console/`, 'the fragment was not removed');
      assert.equal(await page.locator('#token').inputValue(), '', 'the fragment token was taken');
      assert.equal(await page.locator('#workspace').inputValue(), '', 'the fragment workspace was taken');
      assert.ok(await page.locator('#workspace-ui').isHidden(), 'the console connected from a fragment');
      const stored = await page.evaluate(() => sessionStorage.getItem('keygate.console') || '');
      assert.ok(!stored.includes(token), 'the fragment token was stored');
      assert.deepEqual(problems, []);
      log('fragment ignored without --console-handover');
      return;
    }

    // 1. Open the console with the demo's fragment; it leaves the URL at once.
    const fragment = new URLSearchParams({ token, workspace, portalCode, portal }).toString();
    const consoleURL = process.env.CONSOLE_URL || `${gateway}/console/#${fragment}`;
    assert.ok(consoleURL.startsWith(`${gateway}/console/#`), 'CONSOLE_URL is the gateway\'s /console/ with a fragment');
    const res = await page.goto(consoleURL);
    assert.equal(res.status(), 200);
    assert.match(res.headers()['content-security-policy'] || '', /default-src 'self'/);
    await page.getByRole('heading', { name: /API keys/ }).first().waitFor();
    await page.locator('#workspace-ui').waitFor({ state: 'visible' });
    assert.equal(await page.evaluate(() => location.href), `${gateway}/console/`, 'the fragment was not removed');
    assert.ok(!(await page.evaluate(() => location.href)).includes(token));
    assert.ok(await page.getByLabel('TEST (sandbox)').isVisible(), 'TEST mode offered to the PARTNER portal');
    await screenshot('connected');
    log('connected, fragment removed from the URL');

    // 2. A validation error is shown next to its field with its code.
    await page.getByLabel('Name').fill('Console test key');
    await page.getByLabel('Scopes').fill('orders:read');
    await page.getByLabel('IP whitelist').fill('192.168.1.5/24');
    await page.getByRole('button', { name: 'Create key' }).click();
    const ipError = page.locator('#ipWhitelist-error');
    await ipError.filter({ hasText: '4000' }).waitFor();
    const ipText = await ipError.textContent();
    assert.match(ipText, /192\.168\.1\.5\/24: did you mean 192\.168\.1\.0\/24\?/);
    assert.match(ipText, /code 4000/);
    assert.equal(await page.getByLabel('IP whitelist').getAttribute('aria-invalid'), 'true');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'ipWhitelist', 'focus on the field in error');
    assert.equal(await page.locator('.field-error:not(:empty)').count(), 1, 'only the named field is marked');
    await screenshot('validation-error');
    log(`validation error shown next to ipWhitelist: ${ipText}`);

    // 3. Create: the secret is shown once, in a dialog that needs the acknowledgement.
    await page.getByLabel('IP whitelist').fill('127.0.0.1');
    assert.equal(await ipError.textContent(), '', 'the field error clears on edit');
    await page.getByRole('button', { name: 'Create key' }).click();
    const secret = await takeSecret('Your new API key', 'create');
    assert.equal(await page.locator('#secret-value').textContent(), '', 'the secret text node was emptied');
    const row = page.locator('#keys-body tr').filter({ hasText: 'Console test key' });
    await row.waitFor();
    const keyId = (await row.locator('code.id').textContent()).trim();
    assert.match(keyId, /^sk_live_/);
    assert.equal((await row.locator('td[data-label="Hint"]').textContent()).trim(), `${secret.slice(0, 8)}…${secret.slice(-4)}`);
    assert.match(await row.textContent(), /ACTIVE/);
    await page.waitForFunction(() => document.activeElement && document.activeElement.id === 'create-submit');
    await assertGone(secret, 'after the dialog closed');
    await screenshot('created');
    log(`created ${keyId}; dialog closed; the secret is gone from the page, storage and URL; focus restored`);

    // 4. The key works on the product route.
    let r = await useKey(secret);
    assert.equal(r.status, 200, `the new key on /orders/1: ${JSON.stringify(r)}`);
    log('the key opens /orders/1 (200)');

    // 5. Roll a second key with an overlap: both secrets work, the new one shown once.
    await page.getByLabel('Name').fill('Rolled key');
    await page.getByLabel('Scopes').fill('orders:read\norders:write');
    await page.getByLabel('IP whitelist').fill('');
    await page.getByRole('button', { name: 'Create key' }).click();
    const before = await takeSecret('Your new API key', 'create-second');
    await page.getByRole('button', { name: 'Roll key Rolled key' }).click();
    const rollDialog = page.getByRole('dialog', { name: 'Roll key' });
    await rollDialog.waitFor({ state: 'visible' });
    await rollDialog.getByLabel('1 hour').check();
    await screenshot('roll-dialog');
    await rollDialog.getByRole('button', { name: 'Roll key' }).click();
    const after = await takeSecret('Your rolled API key', 'roll', true);
    await page.waitForFunction(() => document.activeElement && document.activeElement.dataset.action === 'roll',
      null, { timeout: 5000 }).catch(() => assert.fail('focus did not return to the Roll button'));
    assert.notEqual(after, before);
    await assertGone(after, 'after the roll dialog closed');
    await assertGone(before, 'after the roll');
    assert.equal((await useKey(before)).status, 200, 'the old secret works during the overlap');
    assert.equal((await useKey(after)).status, 200, 'the rolled secret works');
    log('rolled with a 1 h overlap: old and new secrets both open /orders/1');

    // 6. Revoke in the page, with the confirmation; the key is rejected within ~1.5 s.
    await page.getByRole('button', { name: 'Revoke key Console test key' }).click();
    const confirm = page.getByRole('alertdialog', { name: 'Revoke key?' });
    await confirm.waitFor({ state: 'visible' });
    assert.equal(await page.evaluate(() => document.activeElement.id), 'revoke-cancel', 'the safe choice has the focus');
    await screenshot('revoke-confirm');
    // Used just before: the gateway's verification cache holds it as valid.
    assert.equal((await useKey(secret)).status, 200, 'the key works until revoked');
    const answered = page.waitForResponse((r) => r.request().method() === 'DELETE');
    await confirm.getByRole('button', { name: 'Revoke key' }).click();
    assert.equal((await answered).status(), 200, 'DELETE answered');
    const revokedAt = Date.now(); // the revocation bound runs from the API's answer
    await confirm.waitFor({ state: 'hidden' });
    await page.getByRole('status').filter({ hasText: 'was revoked' }).waitFor();
    for (;;) {
      r = await useKey(secret);
      if (r.status === 401 || Date.now() - revokedAt > 1500) break;
      await new Promise((ok) => setTimeout(ok, 50));
    }
    const took = Date.now() - revokedAt;
    assert.deepEqual(r, { status: 401, code: '4012' }, `revoked key after ${took} ms`);
    await row.filter({ hasText: 'REVOKED' }).waitFor();
    assert.equal(await row.getByRole('button').count(), 0, 'a revoked key offers no actions');
    await screenshot('revoked');
    log(`revoked in the page; rejected with 401/4012 after ${took} ms`);

    // 7. Narrow screen: no horizontal scrolling, the list becomes cards.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.waitForTimeout(100);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `page scrolls sideways by ${overflow}px on a narrow screen`);
    await screenshot('narrow');
    log('narrow screen: no horizontal overflow');

    // 8. Paging: more keys than one page (20); "Load more" follows nextCursor.
    await page.setViewportSize({ width: 1360, height: 900 });
    for (let i = 0; i < 20; i++) {
      const r = await fetch(`${gateway}/web/v1/workspaces/${encodeURIComponent(workspace)}/api-keys`, {
        method: 'POST',
        headers: { 'Authorization': `Bearer ${token}`, 'X-PORTAL-ACCESS-CODE': portalCode, 'Content-Type': 'application/json' },
        body: JSON.stringify({ name: `bulk ${i}`, scopes: ['orders:read'] }),
      });
      assert.equal(r.status, 201, 'bulk create');
    }
    await page.getByRole('button', { name: 'Refresh' }).click();
    await page.getByRole('button', { name: 'Load more' }).waitFor({ state: 'visible' });
    assert.equal(await page.locator('#keys-body tr').count(), 20, 'first page');
    await page.getByRole('button', { name: 'Load more' }).click();
    await page.getByRole('button', { name: 'Load more' }).waitFor({ state: 'hidden' });
    const ids = await page.locator('#keys-body code.id').allTextContents();
    assert.equal(ids.length, 22, 'every key listed once after paging');
    assert.equal(new Set(ids).size, ids.length, 'no key listed twice');
    log('paging: 20 + 2 keys with "Load more"');

    assert.deepEqual(problems, [], 'no script errors or CSP violations');
  } catch (err) {
    await screenshot('failure').catch(() => {});
    throw err;
  } finally {
    await context.close();
  }
}

try {
  await main();
  log('PASS');
} catch (err) {
  console.error(`console-test: FAIL: ${err && err.stack ? err.stack : err}`);
  process.exitCode = 1;
} finally {
  rmSync(profile, { recursive: true, force: true });
}
