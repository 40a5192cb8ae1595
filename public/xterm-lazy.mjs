// opsdeck: what the bare module names "xterm" and "xterm-addon-fit" resolve
// to on every page (see the import map in app/src/lib.rs). The app's wasm
// imports these names statically, so without this shim every page would
// download xterm.js (345 KB); with it, only the console page does, when it
// awaits loadXterm(). The classes hand back real xterm.js instances.
let real = null;

export async function loadXterm() {
  if (!real) {
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
