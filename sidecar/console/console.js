// keygate owner console (docs/CONTRACT.md §2.3). Plain script, no build step, no
// dependencies. It calls the management API of the gateway it was loaded
// from with the owner's JWT and enforces nothing itself.
//
// Secrets: a key secret exists only in the reply being handled and in the
// text node of the secret dialog, which is emptied when the dialog closes.
// It is never written to storage, the URL or any other element. The owner's
// token lives in memory and in sessionStorage (this tab only); a token handed
// over in the URL fragment (read only where the sidecar enables it, as the
// demo does) is removed from the URL at once.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const PAGE = 20;
  const STORE = 'keygate.console'; // sessionStorage key: token, workspace, portal code, portal hint
  const FIELDS = ['name', 'scopes', 'mode', 'ipWhitelist', 'expiresAt'];

  const state = { token: '', workspace: '', portalCode: '', portal: '', cursor: null, loading: false };

  // ---- session ---------------------------------------------------------

  function loadSession() {
    try {
      const s = JSON.parse(sessionStorage.getItem(STORE) || '{}');
      for (const k of ['token', 'workspace', 'portalCode', 'portal']) {
        if (typeof s[k] === 'string') state[k] = s[k];
      }
    } catch (e) { /* storage unavailable or corrupt: start empty */ }
  }

  function saveSession() {
    try {
      sessionStorage.setItem(STORE, JSON.stringify({
        token: state.token, workspace: state.workspace, portalCode: state.portalCode, portal: state.portal,
      }));
    } catch (e) { /* private mode: memory only */ }
  }

  // The demo hands over #token=…&workspace=…&portalCode=…&portal=PARTNER.
  // Read it once, then drop it from the URL and the history entry. Only a
  // sidecar started with --console-handover (the demo) serves the page with
  // data-handover="on": elsewhere a fragment is dropped unread, so that a
  // link cannot switch an owner's session to someone else's token
  // (login CSRF; docs/SECURITY.md).
  function readFragment() {
    if (location.hash.length < 2) return;
    const p = new URLSearchParams(location.hash.slice(1));
    history.replaceState(null, '', location.pathname + location.search);
    if (document.documentElement.dataset.handover !== 'on') return;
    if (p.has('token')) state.token = p.get('token').trim();
    if (p.has('workspace')) state.workspace = p.get('workspace').trim();
    if (p.has('portalCode')) state.portalCode = p.get('portalCode').trim();
    if (p.has('portal')) state.portal = p.get('portal').trim().toUpperCase();
    saveSession();
  }

  // ---- API -------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message, requestId) {
      super(message);
      this.status = status;
      this.code = code;
      this.requestId = requestId;
    }
    describe() {
      return this.message + (this.code ? ' (code ' + this.code + ')' : this.status ? ' (HTTP ' + this.status + ')' : '');
    }
  }

  function keysPath(suffix) {
    return '/web/v1/workspaces/' + encodeURIComponent(state.workspace) + '/api-keys' + (suffix || '');
  }

  async function api(method, path, body) {
    const headers = { 'Accept': 'application/json', 'Authorization': 'Bearer ' + state.token };
    if (state.portalCode) headers['X-PORTAL-ACCESS-CODE'] = state.portalCode;
    const init = { method, headers, cache: 'no-store', credentials: 'omit', redirect: 'error', referrerPolicy: 'no-referrer' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, '', 'The gateway could not be reached', '');
    }
    let env = null;
    try { env = await res.json(); } catch (e) { /* not JSON */ }
    if (!res.ok || !env || env.success !== true) {
      const code = env && typeof env.code === 'string' ? env.code : '';
      const msg = env && typeof env.message === 'string' && env.message ? env.message : 'Request failed';
      throw new ApiError(res.status, code, msg, (env && env.requestId) || res.headers.get('X-Request-Id') || '');
    }
    return env.data;
  }

  // ---- messages --------------------------------------------------------

  let noticeTimer = 0;
  function notice(text) {
    const n = $('notice');
    n.textContent = text;
    n.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => { n.hidden = true; n.textContent = ''; }, 8000);
  }

  function showAlert(err) {
    const a = $('alert');
    a.textContent = '';
    if (!err) { a.hidden = true; return; }
    const strong = document.createElement('strong');
    strong.textContent = err.describe ? err.describe() : String(err);
    a.append(strong);
    if (err.requestId) {
      const rid = document.createElement('span');
      rid.className = 'rid';
      rid.textContent = ' Request ID ' + err.requestId;
      a.append(rid);
    }
    a.hidden = false;
  }

  function setFieldError(id, text) {
    const el = $(id);
    const msg = $(id + '-error');
    if (msg) msg.textContent = text || '';
    if (!el) return;
    el.classList.toggle('invalid', !!text);
    if (text) el.setAttribute('aria-invalid', 'true');
    else el.removeAttribute('aria-invalid');
  }

  function setFormError(id, err) {
    const el = $(id);
    el.textContent = err ? err.describe() : '';
    el.hidden = !err;
  }

  function clearCreateErrors() {
    for (const f of FIELDS) setFieldError(f, '');
    setFormError('create-error', null);
  }

  // The field a 4000 message names: its message starts with the field name.
  function fieldOf(message, fields) {
    const m = /^([A-Za-z]+)/.exec(message || '');
    return m && fields.includes(m[1]) ? m[1] : '';
  }

  // Authentication problems belong to the connection form.
  function connectionError(err) {
    const target = { '4010': 'token', '4030': 'workspace', '4032': 'portal-code' }[err.code];
    if (!target) return false;
    setFieldError(target, err.describe());
    showAlert(err);
    $('connect').open = true;
    $('connect').scrollIntoView({ block: 'nearest' });
    return true;
  }

  // ---- formatting ------------------------------------------------------

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function timeEl(iso) {
    if (!iso) return el('span', 'muted', 'never');
    const d = new Date(iso);
    if (isNaN(d)) return el('span', '', iso);
    const t = el('time', '', d.toLocaleString(undefined, { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' }));
    t.dateTime = iso;
    t.title = iso;
    return t;
  }

  function listEl(items, empty) {
    if (!items || items.length === 0) return el('span', 'muted', empty);
    const ul = el('ul', 'chips');
    for (const s of items) ul.append(el('li', '', s));
    return ul;
  }

  function cell(label, content) {
    const td = el('td');
    td.dataset.label = label;
    if (content instanceof Node) td.append(content);
    else td.textContent = content;
    return td;
  }

  function row(k) {
    const tr = el('tr');
    tr.dataset.id = k.apiKeyId;
    const name = el('th', 'name');
    name.scope = 'row';
    name.dataset.label = 'Name / ID';
    const nameBox = el('div');
    nameBox.append(el('span', 'key-name', k.name), el('code', 'id', k.apiKeyId));
    name.append(nameBox);
    tr.append(name);
    tr.append(cell('Hint', el('code', '', k.secretHint || '')));
    tr.append(cell('Mode', el('span', 'badge mode-' + String(k.mode).toLowerCase(), k.mode)));
    tr.append(cell('Scopes', listEl(k.scopes, 'none: zero access')));
    tr.append(cell('IP whitelist', listEl(k.ipWhitelist, 'any IP')));
    const st = el('div');
    st.append(el('span', 'badge status-' + String(k.status).toLowerCase(), k.status));
    if (k.revokedAt) {
      const s = el('div', 'muted small', 'revoked ');
      s.append(timeEl(k.revokedAt));
      st.append(s);
    } else if (k.expiresAt) {
      const s = el('div', 'muted small', (k.status === 'EXPIRED' ? 'expired ' : 'expires '));
      s.append(timeEl(k.expiresAt));
      st.append(s);
    }
    tr.append(cell('Status', st));
    tr.append(cell('Created', timeEl(k.createdAt)));
    tr.append(cell('Last used', timeEl(k.lastUsedAt)));
    const actions = el('div', 'row-actions');
    if (k.status === 'ACTIVE') {
      const roll = el('button', '', 'Roll');
      roll.type = 'button';
      roll.dataset.action = 'roll';
      roll.dataset.id = k.apiKeyId;
      roll.setAttribute('aria-label', 'Roll key ' + k.name);
      const revoke = el('button', 'danger', 'Revoke');
      revoke.type = 'button';
      revoke.dataset.action = 'revoke';
      revoke.dataset.id = k.apiKeyId;
      revoke.setAttribute('aria-label', 'Revoke key ' + k.name);
      roll.addEventListener('click', () => openRoll(k, roll));
      revoke.addEventListener('click', () => openRevoke(k, revoke));
      actions.append(roll, revoke);
    }
    tr.append(cell('Actions', actions));
    return tr;
  }

  // ---- list ------------------------------------------------------------

  async function loadKeys(append) {
    if (state.loading) return;
    state.loading = true;
    const table = $('keys-table');
    table.setAttribute('aria-busy', 'true');
    $('refresh').disabled = true;
    $('more').disabled = true;
    try {
      let q = '?limit=' + PAGE;
      if (append && state.cursor) q += '&cursor=' + encodeURIComponent(state.cursor);
      const data = await api('GET', keysPath(q));
      const body = $('keys-body');
      if (!append) body.textContent = '';
      for (const k of data.items || []) body.append(row(k));
      state.cursor = data.nextCursor || null;
      $('more').hidden = !state.cursor;
      $('keys-empty').hidden = body.children.length > 0;
      table.hidden = body.children.length === 0;
      showAlert(null);
      return true;
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      if (!connectionError(err)) showAlert(err);
      return false;
    } finally {
      state.loading = false;
      table.removeAttribute('aria-busy');
      $('refresh').disabled = false;
      $('more').disabled = false;
    }
  }

  // ---- connection ------------------------------------------------------

  function jwtClaims(token) {
    try {
      const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      return JSON.parse(atob(part + '==='.slice((part.length + 3) % 4)));
    } catch (e) {
      return null;
    }
  }

  function renderConnection() {
    $('workspace').value = state.workspace;
    $('token').value = state.token;
    $('portal-code').value = state.portalCode;
    const partner = state.portal === 'PARTNER';
    $('mode-test-label').hidden = !partner;
    $('mode-help').textContent = partner
      ? 'This portal (PARTNER) may create TEST keys for the sandbox routes.'
      : 'LIVE only: TEST keys can only be created from the PARTNER portal.';
    if (!partner) document.querySelector('input[name="mode"][value="1"]').checked = true;
    const who = $('who');
    const c = state.token ? jwtClaims(state.token) : null;
    if (c && state.workspace) {
      let text = (c.sub ? c.sub + ' · ' : '') + state.workspace + (state.portal ? ' · ' + state.portal + ' portal' : '');
      if (typeof c.exp === 'number') {
        const left = Math.round((c.exp * 1000 - Date.now()) / 60000);
        text += left > 0 ? ' · token valid ' + left + ' min' : ' · token expired';
      }
      who.textContent = text;
      who.hidden = false;
    } else {
      who.hidden = true;
    }
  }

  async function connect() {
    for (const f of ['workspace', 'token', 'portal-code']) setFieldError(f, '');
    if (!state.workspace) setFieldError('workspace', 'Enter the workspace ID.');
    if (!state.token) setFieldError('token', 'Paste your owner token.');
    if (!state.workspace || !state.token) {
      $(!state.workspace ? 'workspace' : 'token').focus();
      return;
    }
    saveSession();
    renderConnection();
    $('keys-ws').textContent = state.workspace;
    $('keys-body').textContent = ''; // never show one workspace's keys under another's name
    $('more').hidden = true;
    $('keys-empty').hidden = true;
    $('keys-table').hidden = true;
    $('workspace-ui').hidden = false;
    state.cursor = null;
    if (await loadKeys(false)) {
      const a = document.activeElement;
      $('connect').open = false; // the header shows who is connected
      if (!a || a === document.body || $('connect').contains(a)) $('keys-h').focus();
    }
  }

  function forget() {
    state.token = '';
    state.workspace = '';
    state.portalCode = '';
    state.portal = '';
    state.cursor = null;
    try { sessionStorage.removeItem(STORE); } catch (e) { /* ignore */ }
    $('keys-body').textContent = '';
    $('workspace-ui').hidden = true;
    showAlert(null);
    renderConnection();
    $('connect').open = true;
    notice('The token was forgotten in this tab.');
    $('workspace').focus();
  }

  // ---- create ----------------------------------------------------------

  function lines(text) {
    return text.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);
  }

  function rfc3339(local) {
    if (!local) return undefined;
    const d = new Date(local);
    if (isNaN(d)) return local; // let the API name the field
    return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
  }

  async function create(ev) {
    ev.preventDefault();
    clearCreateErrors();
    const form = $('create-form');
    const body = {
      name: $('name').value,
      scopes: lines($('scopes').value),
      mode: form.querySelector('input[name="mode"]:checked').value === '2' ? 2 : 1,
      ipWhitelist: lines($('ipWhitelist').value),
    };
    const exp = rfc3339($('expiresAt').value);
    if (exp) body.expiresAt = exp;
    const submit = $('create-submit');
    submit.disabled = true;
    try {
      const data = await api('POST', keysPath(), body);
      form.reset();
      renderConnection();
      showSecret(data, 'create', submit);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      if (connectionError(err)) return;
      let field = '';
      if (err.code === '4000') field = fieldOf(err.message, FIELDS);
      if (err.code === '4031') field = 'mode';
      if (field) {
        setFieldError(field, err.describe());
        const target = field === 'mode' ? form.querySelector('input[name="mode"]:checked') : $(field);
        if (target) target.focus();
      } else {
        setFormError('create-error', err);
      }
    } finally {
      submit.disabled = false;
    }
  }

  // ---- dialogs ---------------------------------------------------------

  // Focus returns to the control that opened a dialog; when a refresh has
  // replaced that control, to its successor in the new list, else the list.
  let returnFocus = null;

  function restoreFocus() {
    const r = returnFocus;
    returnFocus = null;
    if (!r) return;
    if (r.isConnected) { r.focus(); return; }
    const again = r.dataset && r.dataset.id
      ? document.querySelector('button[data-action="' + r.dataset.action + '"][data-id="' + CSS.escape(r.dataset.id) + '"]')
      : null;
    (again || $('keys-h')).focus();
  }

  // The secret dialog: shown once, closed only by "Done" after the
  // acknowledgement; Escape and the close watcher cannot dismiss it.
  const secretDialog = $('secret-dialog');

  function showSecret(data, verb, opener, note) {
    returnFocus = opener || document.activeElement;
    $('secret-h').textContent = verb === 'roll' ? 'Your rolled API key' : 'Your new API key';
    $('secret-name').textContent = data.name;
    $('secret-id').textContent = data.apiKeyId;
    $('secret-value').textContent = data.secret;
    $('copy-status').textContent = '';
    $('secret-note').textContent = note || '';
    $('secret-note').hidden = !note;
    $('ack').checked = false;
    $('secret-done').disabled = true;
    secretDialog.showModal();
    $('copy').focus();
  }

  function acknowledged() { return $('ack').checked; }

  secretDialog.addEventListener('cancel', (e) => e.preventDefault());
  secretDialog.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') e.preventDefault();
  });
  secretDialog.addEventListener('close', () => {
    if (!acknowledged() && $('secret-value').textContent) {
      secretDialog.showModal(); // something closed it early: put it back
      $('copy').focus();
      return;
    }
    $('secret-value').textContent = '';
    $('secret-id').textContent = '';
    $('secret-name').textContent = '';
    $('copy-status').textContent = '';
    $('secret-note').textContent = '';
    $('ack').checked = false;
    $('secret-done').disabled = true;
    state.cursor = null;
    loadKeys(false).then(restoreFocus);
  });
  $('ack').addEventListener('change', () => { $('secret-done').disabled = !acknowledged(); });
  $('secret-done').addEventListener('click', () => {
    if (!acknowledged()) return;
    $('secret-value').textContent = '';
    secretDialog.close();
  });

  $('copy').addEventListener('click', async () => {
    const value = $('secret-value').textContent;
    const status = $('copy-status');
    try {
      await navigator.clipboard.writeText(value);
      status.textContent = 'Copied to the clipboard.';
    } catch (e) {
      // No clipboard permission: select the text so Ctrl+C copies it.
      const range = document.createRange();
      range.selectNodeContents($('secret-value'));
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      status.textContent = 'Copying is not allowed here: the secret is selected, press Ctrl+C (⌘C) to copy it.';
    }
  });

  // Roll.
  const rollDialog = $('roll-dialog');
  let rollKey = null;

  function openRoll(k, opener) {
    rollKey = k;
    returnFocus = opener;
    $('roll-name').textContent = k.name;
    $('roll-id').textContent = k.apiKeyId;
    $('roll-form').reset();
    setFieldError('expireOldInSeconds', '');
    setFormError('roll-error', null);
    rollDialog.showModal();
    rollDialog.querySelector('input[name="overlap"]:checked').focus();
  }

  $('roll-cancel').addEventListener('click', () => rollDialog.close('cancel'));
  rollDialog.addEventListener('close', () => {
    if (rollDialog.returnValue !== 'rolled') restoreFocus();
    rollDialog.returnValue = '';
  });
  $('roll-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const k = rollKey;
    const seconds = Number($('roll-form').querySelector('input[name="overlap"]:checked').value);
    setFieldError('expireOldInSeconds', '');
    setFormError('roll-error', null);
    $('roll-submit').disabled = true;
    try {
      const data = await api('POST', keysPath('/' + encodeURIComponent(k.apiKeyId) + '/roll'), { expireOldInSeconds: seconds });
      const opener = returnFocus;
      const choice = $('roll-form').querySelector('input[name="overlap"]:checked').closest('label').textContent.trim();
      rollDialog.close('rolled');
      showSecret(data, 'roll', opener, seconds > 0
        ? 'The previous secret keeps working for ' + choice + ', then only this one does.'
        : 'The previous secret no longer works.');
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      if (err.code === '4000' && fieldOf(err.message, ['expireOldInSeconds'])) {
        setFieldError('expireOldInSeconds', err.describe());
      } else {
        setFormError('roll-error', err);
        if (['4010', '4030', '4032'].includes(err.code)) connectionError(err);
      }
    } finally {
      $('roll-submit').disabled = false;
    }
  });

  // Revoke.
  const revokeDialog = $('revoke-dialog');
  let revokeKey = null;

  function openRevoke(k, opener) {
    revokeKey = k;
    returnFocus = opener;
    $('revoke-name').textContent = k.name;
    $('revoke-id').textContent = k.apiKeyId;
    setFormError('revoke-error', null);
    revokeDialog.showModal();
    $('revoke-cancel').focus(); // the safe choice first
  }

  $('revoke-cancel').addEventListener('click', () => revokeDialog.close());
  revokeDialog.addEventListener('close', () => {
    if (revokeDialog.returnValue === 'revoked') {
      revokeDialog.returnValue = '';
      state.cursor = null;
      loadKeys(false).then(restoreFocus);
    } else {
      restoreFocus();
    }
  });
  $('revoke-confirm').addEventListener('click', async () => {
    const k = revokeKey;
    setFormError('revoke-error', null);
    $('revoke-confirm').disabled = true;
    try {
      await api('DELETE', keysPath('/' + encodeURIComponent(k.apiKeyId)));
      notice('Key “' + k.name + '” (' + k.apiKeyId + ') was revoked.');
      if (revokeDialog.open) revokeDialog.close('revoked');
      else { state.cursor = null; loadKeys(false); } // dismissed while the request ran
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      setFormError('revoke-error', err);
      if (['4010', '4030', '4032'].includes(err.code)) connectionError(err);
    } finally {
      $('revoke-confirm').disabled = false;
    }
  });

  // ---- wiring ----------------------------------------------------------

  $('connect-form').addEventListener('submit', (e) => {
    e.preventDefault();
    state.workspace = $('workspace').value.trim();
    state.token = $('token').value.trim();
    state.portalCode = $('portal-code').value.trim();
    connect();
  });
  $('forget').addEventListener('click', forget);
  $('create-form').addEventListener('submit', create);
  for (const f of FIELDS) {
    const input = $(f);
    if (input) input.addEventListener('input', () => setFieldError(f, ''));
  }
  $('refresh').addEventListener('click', () => { state.cursor = null; loadKeys(false); });
  $('more').addEventListener('click', () => loadKeys(true));

  readFragment();
  if (!state.token) loadSession();
  renderConnection();
  if (state.token && state.workspace) connect();
  else $(state.workspace ? 'token' : 'workspace').focus();
})();
