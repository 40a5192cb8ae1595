// opsdeck: what the bare module names "xterm" and "xterm-addon-fit" resolve
// to on every page (see the import map in app/src/lib.rs). The app's wasm
// imports these names statically, so without this shim every page would
// download xterm.js (345 KB); with it, only the console page does, when it
// awaits loadXterm(). The classes hand back real xterm.js instances.
let real = null;

// The page's Content-Security-Policy lets a <style> element apply only with
// the page's nonce, and xterm.js creates its own <style> elements (theme,
// dimensions): stamp the nonce on each one as it is created, before it is
// inserted (a nonce set later is not honoured). Only scripts already
// allowed to run reach createElement, so this lends the nonce to no one
// else. The nonce comes from the page's own inline scripts.
function stampStyleNonces() {
  const nonce = document.querySelector('script[nonce]')?.nonce;
  if (!nonce || document.createElement.opsdeckNonce) return;
  const create = document.createElement;
  const stamped = function (tag, options) {
    const el = create.call(this, tag, options);
    if (String(tag).toLowerCase() === 'style') el.setAttribute('nonce', nonce);
    return el;
  };
  stamped.opsdeckNonce = true;
  document.createElement = stamped;
}

export async function loadXterm() {
  if (!real) {
    stampStyleNonces();
    const [xterm, fit] = await Promise.all([
      import('/vendor/xterm/xterm.mjs'),
      import('/vendor/xterm/addon-fit.mjs'),
    ]);
    real = { Terminal: xterm.Terminal, FitAddon: fit.FitAddon };
  }
}

function loaded() {
  if (!real) throw new Error('xterm.js is not loaded yet: await loadXterm() first');
  return real;
}

export class Terminal {
  constructor(options) {
    return new (loaded().Terminal)(options);
  }
}

export class FitAddon {
  constructor() {
    return new (loaded().FitAddon)();
  }
}
