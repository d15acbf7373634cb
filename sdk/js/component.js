// The glue of a built component (not for Node): connects the WIT imports of
// `sluice:plugin/host@2.0.0` to sluice.js, and sends `console.*` to `host.log`, since a
// component built with `--stub-wasi` has no stdout/stderr (writing there would trap).
// `scripts/build-js-plugins.sh` generates the entry module of each plugin as:
//
//   import './sdk/js/component.js';            // first: the host is connected before the app runs
//   import './plugins/<name>/app.js';           // registers the functions
//   export { functions } from './sdk/js/sluice.js';
import { log, metric, panic } from 'sluice:plugin/host@2.0.0';
import { connectHost } from './sluice.js';

connectHost({ log, metric, panic });

const text = (args) =>
  args
    .map((a) => {
      if (typeof a === 'string') return a;
      if (a instanceof Error) return a.stack ? `${a.name}: ${a.message}\n${a.stack}` : `${a.name}: ${a.message}`;
      try {
        return JSON.stringify(a, (_, v) => (typeof v === 'bigint' ? `${v}n` : v)) ?? String(a);
      } catch {
        return String(a);
      }
    })
    .join(' ');

globalThis.console = {
  log: (...args) => log('info', text(args)),
  info: (...args) => log('info', text(args)),
  warn: (...args) => log('warn', text(args)),
  error: (...args) => log('error', text(args)),
  debug: (...args) => log('debug', text(args)),
  trace: (...args) => log('debug', text(args)),
};

// No clock either (--stub-wasi: reading one traps, which kills the instance): make reading it a
// JS error, which fails the call with a message and a stack. A record's time is in the record.
const noClock = (what) => () => {
  throw new Error(`${what}: a Sluice plugin has no clock (use the time in the record)`);
};
const RealDate = Date;
function SluiceDate(...args) {
  if (!new.target) noClock('Date()')();
  if (args.length === 0) noClock('new Date()')();
  return Reflect.construct(RealDate, args, new.target);
}
SluiceDate.prototype = RealDate.prototype;
SluiceDate.UTC = RealDate.UTC;
SluiceDate.parse = RealDate.parse;
SluiceDate.now = noClock('Date.now()');
globalThis.Date = SluiceDate;
if (typeof performance === 'object' && performance !== null) {
  try {
    performance.now = noClock('performance.now()');
  } catch {
    globalThis.performance = { now: noClock('performance.now()') };
  }
}
