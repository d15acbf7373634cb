// Sluice plugins in JavaScript: the guest SDK for ABI 2 (the WIT world `plugin` of
// `sdk/wit/sluice.wit`, package sluice:plugin@2.0.0), built into a WebAssembly component by
// `scripts/build-js-plugins.sh` (componentize-qjs, QuickJS). No dependencies; runs unchanged
// in Node (tests) and in QuickJS (no TextEncoder/TextDecoder needed).
//
//   import { flatMap, reduce, t } from '../../sdk/js/sluice.js';
//   flatMap('split_words', { input: t.str, output: t.tuple(t.str, t.u64) },
//           (line) => words(line).map((w) => [w, 1]));
//   reduce('sum', t.u64, (a, b) => a + b);
//
// What this module owns:
// - postcard, the records' encoding, for the types `t.*` describe (see `t` below);
// - the partition layouts of every function kind (sdk/src/abi.rs, the table in its module
//   docs): frames of a `u32` little-endian length and one record's postcard bytes;
// - the `functions` export (`describe`, `call`) built from what the plugin registered, and the
//   host imports (`log`, the metrics) behind plain functions.
//
// 64-bit integers. `t.u64`/`t.i64` decode to a JS Number and refuse (the call fails, naming
// the record) a value beyond Number.MAX_SAFE_INTEGER (2^53 - 1), so a value is never silently
// rounded. `t.u64n`/`t.i64n` (and `t.u128`/`t.i128`, always) decode to a BigInt, exact over the
// whole range. All of them describe as the same Rust type (u64, i64, ...) and encode either a
// Number (a safe integer) or a BigInt, checking the range. Pick the BigInt form when values
// may exceed 2^53 or when wrapping arithmetic like Rust's must be reproduced
// (`BigInt.asUintN(64, a + b)`).
//
// Errors. An exception thrown by a function (or by iterating what it returned) fails the whole
// call: `call` returns the WIT `result` error, with the function's name, the input record's
// index, the message and the stack. A function registered with `fallible: true` (map, flat_map,
// filter) instead fails only that record: the record's error goes to the fallible trailer and
// the host applies the stage's `on_error`. Input that does not decode, or output that does not
// encode as the declared type, always fails the call.

// ---------------------------------------------------------------------------------------------
// Errors

// Bytes that do not decode as the expected type.
export class DecodeError extends Error {
  constructor(message) {
    super(message);
    this.name = 'DecodeError';
  }
}

// A value that does not encode as the declared type.
export class EncodeError extends Error {
  constructor(message) {
    super(message);
    this.name = 'EncodeError';
  }
}

// An error of the call itself (its input's layout, an unknown function): no stack needed.
class CallError extends Error {
  constructor(message) {
    super(message);
    this.name = 'CallError';
  }
}

function show(value) {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'bigint') return `${value}n`;
  if (value === null || value === undefined || typeof value !== 'object') return String(value);
  try {
    const text = JSON.stringify(value, (_, v) => (typeof v === 'bigint' ? `${v}n` : v));
    return text === undefined ? String(value) : text.length > 80 ? `${text.slice(0, 77)}...` : text;
  } catch {
    return Object.prototype.toString.call(value);
  }
}

// ---------------------------------------------------------------------------------------------
// Bytes

// A growable byte buffer: the output of a call, or of `encode`.
export class Writer {
  constructor(capacity = 256) {
    this.buf = new Uint8Array(Math.max(16, capacity));
    this.len = 0;
  }

  // Makes room for `n` more bytes.
  reserve(n) {
    const need = this.len + n;
    if (need <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < need) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.buf.subarray(0, this.len));
    this.buf = grown;
  }

  byte(b) {
    if (this.len === this.buf.length) this.reserve(1);
    this.buf[this.len++] = b;
  }

  bytes(bytes) {
    this.reserve(bytes.length);
    this.buf.set(bytes, this.len);
    this.len += bytes.length;
  }

  // A `u32`, four bytes little-endian (frame lengths, group counts).
  u32le(n) {
    this.reserve(4);
    const b = this.buf;
    let at = this.len;
    b[at++] = n & 0xff;
    b[at++] = (n >>> 8) & 0xff;
    b[at++] = (n >>> 16) & 0xff;
    b[at++] = (n >>> 24) & 0xff;
    this.len = at;
  }

  // Writes `n` (u32) over four bytes at `at`.
  patchU32le(at, n) {
    const b = this.buf;
    b[at] = n & 0xff;
    b[at + 1] = (n >>> 8) & 0xff;
    b[at + 2] = (n >>> 16) & 0xff;
    b[at + 3] = (n >>> 24) & 0xff;
  }

  // An unsigned LEB128 varint of a non-negative integer Number (exact up to 2^53, and for
  // any larger Number that is exactly an integer).
  varint(n) {
    this.reserve(10);
    const b = this.buf;
    let at = this.len;
    if (n < 0x80000000) {
      while (n >= 0x80) {
        b[at++] = (n & 0x7f) | 0x80;
        n >>>= 7;
      }
    } else {
      while (n >= 0x80) {
        b[at++] = (n % 0x80) | 0x80;
        n = Math.floor(n / 0x80);
      }
    }
    b[at++] = n;
    this.len = at;
  }

  // An unsigned LEB128 varint of a non-negative BigInt.
  bigVarint(n) {
    this.reserve(19);
    while (n >= 0x80n) {
      this.buf[this.len++] = Number(n & 0x7fn) | 0x80;
      n >>= 7n;
    }
    this.buf[this.len++] = Number(n);
  }

  // Starts a frame: its length is written by `endFrame(start)`.
  beginFrame() {
    this.reserve(4);
    const at = this.len;
    this.len += 4;
    return at;
  }

  endFrame(at) {
    this.patchU32le(at, this.len - at - 4);
  }

  // The bytes written (a view, not a copy).
  finish() {
    return this.buf.subarray(0, this.len);
  }
}

// Reads postcard values out of `buf[pos..end)`.
export class Reader {
  constructor(buf, pos = 0, end = buf.length) {
    this.buf = buf;
    this.pos = pos;
    this.end = end;
  }

  byte() {
    if (this.pos >= this.end) throw new DecodeError('unexpected end of the record');
    return this.buf[this.pos++];
  }

  // The next `n` bytes, as a view.
  take(n) {
    if (n > this.end - this.pos) {
      throw new DecodeError(`unexpected end of the record (${n} bytes needed, ${this.end - this.pos} left)`);
    }
    const at = this.pos;
    this.pos += n;
    return this.buf.subarray(at, at + n);
  }

  // An unsigned varint of an integer of `bits` bits (postcard's rules: at most ceil(bits/7)
  // bytes, and the last of that many holds only the remaining bits). A Number when it is at
  // most 2^53 - 1, else a BigInt.
  varint(bits) {
    const buf = this.buf;
    if (this.pos < this.end && buf[this.pos] < 0x80) return buf[this.pos++];
    const maxBytes = Math.ceil(bits / 7);
    const lastMax = (1 << (bits % 7)) - 1;
    let value = 0;
    let big = null;
    for (let i = 0; i < maxBytes; i++) {
      if (this.pos >= this.end) throw new DecodeError('unexpected end of the record in a varint');
      const b = buf[this.pos++];
      const low = b & 0x7f;
      if (i < 7) {
        value += low * 2 ** (7 * i);
      } else {
        if (big === null) big = BigInt(value);
        big |= BigInt(low) << BigInt(7 * i);
      }
      if ((b & 0x80) === 0) {
        if (i === maxBytes - 1 && b > lastMax) throw new DecodeError(`varint overflows u${bits}`);
        if (big === null) return value;
        return big <= 0x1fffffffffffffn ? Number(big) : big;
      }
    }
    throw new DecodeError(`varint longer than ${maxBytes} bytes (u${bits})`);
  }
}

// ---------------------------------------------------------------------------------------------
// UTF-8, without TextEncoder/TextDecoder (QuickJS has neither)

// ASCII strings at least this long take the native paths where there are: QuickJS has btoa,
// atob and Uint8Array's base64 methods (ES2025), which copy an ASCII string's bytes without a
// JS loop (Node 20 lacks the latter and takes the loops). Shorter strings are faster in JS.
const FAST_MIN = 16;
const NATIVE_BASE64 =
  typeof btoa === 'function' &&
  typeof atob === 'function' &&
  typeof Uint8Array.prototype.setFromBase64 === 'function' &&
  typeof Uint8Array.prototype.toBase64 === 'function';
const NON_ASCII = /[^\x00-\x7f]/;

// Writes `s` as postcard's string: varint byte length, then UTF-8. A lone surrogate (which no
// Rust string can hold) is written as U+FFFD, as TextEncoder does.
function writeStr(w, s) {
  const n = s.length;
  if (n >= FAST_MIN && NATIVE_BASE64 && !NON_ASCII.test(s)) {
    // ASCII: its bytes are its chars; btoa and setFromBase64 copy them natively.
    w.varint(n);
    w.reserve(n);
    w.buf.subarray(w.len, w.len + n).setFromBase64(btoa(s));
    w.len += n;
    return;
  }
  // The prefix is sized for the smallest possible byte length (all ASCII); moved if larger.
  const guess = n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : n < 0x10000000 ? 4 : 5;
  const start = w.len;
  if (start + 5 + 3 * n > w.buf.length) w.reserve(5 + 3 * n);
  const b = w.buf;
  let at = start + guess;
  for (let i = 0; i < n; i++) {
    let c = s.charCodeAt(i);
    if (c < 0x80) {
      b[at++] = c;
    } else if (c < 0x800) {
      b[at++] = 0xc0 | (c >> 6);
      b[at++] = 0x80 | (c & 0x3f);
    } else if (c < 0xd800 || c > 0xdfff) {
      b[at++] = 0xe0 | (c >> 12);
      b[at++] = 0x80 | ((c >> 6) & 0x3f);
      b[at++] = 0x80 | (c & 0x3f);
    } else {
      const d = i + 1 < n ? s.charCodeAt(i + 1) : 0;
      if (c <= 0xdbff && d >= 0xdc00 && d <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
        b[at++] = 0xf0 | (c >> 18);
        b[at++] = 0x80 | ((c >> 12) & 0x3f);
        b[at++] = 0x80 | ((c >> 6) & 0x3f);
        b[at++] = 0x80 | (c & 0x3f);
      } else {
        b[at++] = 0xef;
        b[at++] = 0xbf;
        b[at++] = 0xbd;
      }
    }
  }
  const len = at - start - guess;
  if (len < 0x80) {
    // the common case: one length byte, as guessed
    b[start] = len;
    w.len = at;
    return;
  }
  const size = len < 0x4000 ? 2 : len < 0x200000 ? 3 : len < 0x10000000 ? 4 : 5;
  if (size !== guess) {
    b.copyWithin(start + size, start + guess, at);
    at += size - guess;
  }
  w.len = start;
  w.varint(len);
  w.len = at;
}

const CHUNK = 4096;

// The string of the UTF-8 bytes `buf[start..end)`; a DecodeError for bytes that are not UTF-8
// (the same bytes Rust's `str::from_utf8` refuses: overlong forms, surrogates, > U+10FFFF,
// truncated sequences). A byte-order mark is kept.
export function decodeUtf8(buf, start = 0, end = buf.length) {
  if (end - start >= FAST_MIN && NATIVE_BASE64) {
    const latin1 = atob(buf.subarray(start, end).toBase64());
    if (!NON_ASCII.test(latin1)) return latin1;
  }
  let i = start;
  while (i < end && buf[i] < 0x80) i++;
  if (i === end) return ascii(buf, start, end);
  let out = ascii(buf, start, i);
  let units = [];
  while (i < end) {
    const b0 = buf[i];
    if (b0 < 0x80) {
      units.push(b0);
      i++;
    } else {
      let cp;
      let need;
      let min;
      if (b0 >= 0xc2 && b0 <= 0xdf) {
        cp = b0 & 0x1f;
        need = 1;
        min = 0x80;
      } else if (b0 >= 0xe0 && b0 <= 0xef) {
        cp = b0 & 0x0f;
        need = 2;
        min = 0x800;
      } else if (b0 >= 0xf0 && b0 <= 0xf4) {
        cp = b0 & 0x07;
        need = 3;
        min = 0x10000;
      } else {
        throw new DecodeError(`invalid UTF-8: byte 0x${b0.toString(16)} at offset ${i - start}`);
      }
      if (i + need >= end + 1) throw new DecodeError(`invalid UTF-8: truncated sequence at offset ${i - start}`);
      for (let k = 1; k <= need; k++) {
        const c = buf[i + k];
        if ((c & 0xc0) !== 0x80) throw new DecodeError(`invalid UTF-8: bad continuation byte at offset ${i + k - start}`);
        cp = (cp << 6) | (c & 0x3f);
      }
      if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
        throw new DecodeError(`invalid UTF-8: sequence at offset ${i - start}`);
      }
      i += need + 1;
      if (cp < 0x10000) {
        units.push(cp);
      } else {
        const v = cp - 0x10000;
        units.push(0xd800 + (v >> 10), 0xdc00 + (v & 0x3ff));
      }
    }
    if (units.length >= CHUNK) {
      out += String.fromCharCode.apply(null, units);
      units = [];
    }
  }
  return units.length ? out + String.fromCharCode.apply(null, units) : out;
}

function ascii(buf, start, end) {
  const n = end - start;
  if (n === 0) return '';
  if (n === 1) return String.fromCharCode(buf[start]);
  let out = '';
  for (let at = start; at < end; at += CHUNK) {
    out += String.fromCharCode.apply(null, buf.subarray(at, Math.min(end, at + CHUNK)));
  }
  return out;
}

// `s` as UTF-8 bytes (the same as TextEncoder's).
export function encodeUtf8(s) {
  const w = new Writer(s.length + 8);
  writeStr(w, s);
  const r = new Reader(w.buf, 0, w.len);
  const len = r.varint(32);
  return w.buf.slice(r.pos, r.pos + len);
}

// ---------------------------------------------------------------------------------------------
// Types: what a record is, how it is encoded, and how it is described to the host

// A type of records: `enc(writer, value)`, `dec(reader)`, and `node(push)`, the WIT
// `type-node` of the type with its children's indices (from `push(child)`).
export class Type {
  constructor(name, node, enc, dec) {
    this.name = name;
    this.node = node;
    this.enc = enc;
    this.dec = dec;
  }

  toString() {
    return this.name;
  }
}

const isType = (x) => x instanceof Type;

// A compound type's parts, for introspection: `inner` (option), `item` (seq), `items`
// (tuple), `key` and `value` (map), `fields` (struct: [name, type] pairs), `variants` (enum).
const withParts = (parts, ty) => Object.assign(ty, parts);

function leaf(name, tag, val, enc, dec) {
  const node = val === undefined ? { tag } : { tag, val };
  return new Type(name, () => node, enc, dec);
}

function unsignedSmall(bits) {
  const max = 2 ** bits - 1;
  const name = `u${bits}`;
  const enc =
    bits === 8
      ? (w, v) => {
          if (typeof v === 'bigint') v = Number(v);
          if (!(Number.isInteger(v) && v >= 0 && v <= 255)) throw new EncodeError(`${show(v)} is not a u8`);
          w.byte(v);
        }
      : (w, v) => {
          if (typeof v === 'bigint') v = v >= 0n && v <= BigInt(max) ? Number(v) : -1;
          if (!(Number.isInteger(v) && v >= 0 && v <= max)) throw new EncodeError(`${show(v)} is not a ${name}`);
          w.varint(v);
        };
  const dec = bits === 8 ? (r) => r.byte() : (r) => r.varint(bits);
  return leaf(name, 'unsigned', bits, enc, dec);
}

function signedSmall(bits) {
  const min = -(2 ** (bits - 1));
  const max = 2 ** (bits - 1) - 1;
  const name = `i${bits}`;
  const enc =
    bits === 8
      ? (w, v) => {
          if (typeof v === 'bigint') v = Number(v);
          if (!(Number.isInteger(v) && v >= min && v <= max)) throw new EncodeError(`${show(v)} is not an i8`);
          w.byte(v & 0xff);
        }
      : (w, v) => {
          if (typeof v === 'bigint') v = v >= BigInt(min) && v <= BigInt(max) ? Number(v) : NaN;
          if (!(Number.isInteger(v) && v >= min && v <= max)) throw new EncodeError(`${show(v)} is not an ${name}`);
          w.varint(((v << 1) ^ (v >> 31)) >>> 0);
        };
  const dec =
    bits === 8
      ? (r) => {
          const b = r.byte();
          return b > 127 ? b - 256 : b;
        }
      : (r) => {
          const z = r.varint(bits);
          return (z >>> 1) ^ -(z & 1);
        };
  return leaf(name, 'signed', bits, enc, dec);
}

// u64/u128: `big` decodes to a BigInt, else to a Number (refusing one above 2^53 - 1).
function unsignedWide(bits, big) {
  const name = `u${bits}`;
  const maxBig = (1n << BigInt(bits)) - 1n;
  const enc = (w, v) => {
    if (typeof v === 'number') {
      if (v >= 0 && v < 0x80 && (v | 0) === v) {
        if (w.len === w.buf.length) w.reserve(1);
        w.buf[w.len++] = v;
        return;
      }
      if (!(Number.isSafeInteger(v) && v >= 0)) {
        throw new EncodeError(`${show(v)} is not a ${name} (a Number must be a safe integer; use a BigInt beyond 2^53)`);
      }
      w.varint(v);
    } else if (typeof v === 'bigint' && v >= 0n && v <= maxBig) {
      if (v <= 0x1fffffffffffffn) w.varint(Number(v));
      else w.bigVarint(v);
    } else {
      throw new EncodeError(`${show(v)} is not a ${name}`);
    }
  };
  const dec = big
    ? (r) => BigInt(r.varint(bits))
    : (r) => {
        const v = r.varint(bits);
        if (typeof v === 'bigint') {
          throw new DecodeError(`${v} exceeds Number.MAX_SAFE_INTEGER (declare the type as t.${name}n for a BigInt)`);
        }
        return v;
      };
  return leaf(name, 'unsigned', bits, enc, dec);
}

// i64/i128, zigzag: `big` decodes to a BigInt, else to a Number (refusing one beyond ±(2^53 - 1)).
function signedWide(bits, big) {
  const name = `i${bits}`;
  const minBig = -(1n << BigInt(bits - 1));
  const maxBig = (1n << BigInt(bits - 1)) - 1n;
  const enc = (w, v) => {
    if (typeof v === 'number') {
      if (!Number.isSafeInteger(v)) {
        throw new EncodeError(`${show(v)} is not an ${name} (a Number must be a safe integer; use a BigInt beyond 2^53)`);
      }
      if (v >= -0x10000000000000 && v < 0x10000000000000) {
        w.varint(v >= 0 ? 2 * v : -2 * v - 1); // exact: |zigzag| < 2^53
        return;
      }
      v = BigInt(v);
    } else if (!(typeof v === 'bigint' && v >= minBig && v <= maxBig)) {
      throw new EncodeError(`${show(v)} is not an ${name}`);
    }
    w.bigVarint(v >= 0n ? v << 1n : (-v << 1n) - 1n);
  };
  const dec = (r) => {
    const z = r.varint(bits);
    if (typeof z === 'number') {
      const n = z % 2 === 0 ? z / 2 : -(z + 1) / 2;
      return big ? BigInt(n) : n;
    }
    const n = z & 1n ? -((z + 1n) >> 1n) : z >> 1n;
    if (big) return n;
    if (n >= -0x1fffffffffffffn && n <= 0x1fffffffffffffn) return Number(n);
    throw new DecodeError(`${n} exceeds Number.MAX_SAFE_INTEGER in magnitude (declare the type as t.${name}n for a BigInt)`);
  };
  return leaf(name, 'signed', bits, enc, dec);
}

const scratch = new DataView(new ArrayBuffer(8));

function float(bits) {
  const name = `f${bits}`;
  const size = bits / 8;
  const enc = (w, v) => {
    if (typeof v !== 'number') throw new EncodeError(`${show(v)} is not an ${name}`);
    if (bits === 32) scratch.setFloat32(0, v, true);
    else scratch.setFloat64(0, v, true);
    w.reserve(size);
    for (let i = 0; i < size; i++) w.buf[w.len++] = scratch.getUint8(i);
  };
  const dec = (r) => {
    const bytes = r.take(size);
    for (let i = 0; i < size; i++) scratch.setUint8(i, bytes[i]);
    return bits === 32 ? scratch.getFloat32(0, true) : scratch.getFloat64(0, true);
  };
  return leaf(name, bits === 32 ? 'float32' : 'float64', undefined, enc, dec);
}

function readStr(r) {
  const n = r.varint(32);
  if (n > r.end - r.pos) throw new DecodeError(`a string of ${n} bytes, ${r.end - r.pos} left`);
  const at = r.pos;
  r.pos += n;
  return decodeUtf8(r.buf, at, at + n);
}

const str = leaf(
  'String',
  'text',
  undefined,
  (w, v) => {
    if (typeof v !== 'string') throw new EncodeError(`${show(v)} is not a string`);
    writeStr(w, v);
  },
  readStr,
);

const oneChar = (s) => typeof s === 'string' && s.length > 0 && s.length <= 2 && [...s].length === 1;

const char = leaf(
  'char',
  'char',
  undefined,
  (w, v) => {
    if (!oneChar(v) || (v.length === 1 && v.charCodeAt(0) >= 0xd800 && v.charCodeAt(0) <= 0xdfff)) {
      throw new EncodeError(`${show(v)} is not one character`);
    }
    writeStr(w, v);
  },
  (r) => {
    const s = readStr(r);
    if (!oneChar(s)) throw new DecodeError(`${show(s)} is not one character`);
    return s;
  },
);

const bytes = leaf(
  'Vec<u8>',
  'bytes',
  undefined,
  (w, v) => {
    if (!(v instanceof Uint8Array)) {
      if (!Array.isArray(v) || !v.every((b) => Number.isInteger(b) && b >= 0 && b <= 255)) {
        throw new EncodeError(`${show(v)} is not bytes (a Uint8Array or an array of bytes)`);
      }
    }
    w.varint(v.length);
    w.bytes(v);
  },
  (r) => {
    const n = r.varint(32);
    return r.take(n).slice();
  },
);

const unit = leaf(
  '()',
  'unit',
  undefined,
  () => {},
  () => null,
);

const bool = leaf(
  'bool',
  'boolean',
  undefined,
  (w, v) => {
    if (typeof v !== 'boolean') throw new EncodeError(`${show(v)} is not a boolean`);
    w.byte(v ? 1 : 0);
  },
  (r) => {
    const b = r.byte();
    if (b > 1) throw new DecodeError(`${b} is not a bool (0 or 1)`);
    return b === 1;
  },
);

function expectType(x, what) {
  if (!isType(x)) throw new TypeError(`${what} is not a type (t.str, t.u64, t.tuple(...), ...): ${show(x)}`);
  return x;
}

// `Option<T>`: `null` or `undefined` is None. (`Option<Option<T>>` cannot tell Some(None) from
// None: both are null.)
function option(inner) {
  expectType(inner, 'the option\'s type');
  const ty = new Type(
    `Option<${inner.name}>`,
    (push) => ({ tag: 'option', val: push(inner) }),
    (w, v) => {
      if (v === null || v === undefined) {
        w.byte(0);
      } else {
        w.byte(1);
        inner.enc(w, v);
      }
    },
    (r) => {
      const tag = r.byte();
      if (tag === 0) return null;
      if (tag === 1) return inner.dec(r);
      throw new DecodeError(`${tag} is not an option tag (0 or 1)`);
    },
  );
  ty.optional = true;
  ty.inner = inner;
  return ty;
}

// `Vec<T>`: an array (any iterable encodes).
function seq(item) {
  expectType(item, 'the sequence\'s type');
  return withParts({ item }, new Type(
    `Vec<${item.name}>`,
    (push) => ({ tag: 'seq', val: push(item) }),
    (w, v) => {
      if (!Array.isArray(v)) {
        if (v === null || v === undefined || typeof v[Symbol.iterator] !== 'function') {
          throw new EncodeError(`${show(v)} is not an array`);
        }
        v = [...v];
      }
      w.varint(v.length);
      for (let i = 0; i < v.length; i++) item.enc(w, v[i]);
    },
    (r) => {
      const n = r.varint(32);
      const out = [];
      for (let i = 0; i < n; i++) out.push(item.dec(r));
      return out;
    },
  ));
}

// `(A, B, ...)`: an array of the items. A 2-tuple is a keyed record `(K, V)`.
function tuple(...items) {
  items.forEach((x, i) => expectType(x, `tuple item ${i}`));
  const n = items.length;
  return withParts({ items }, new Type(
    `(${items.map((x) => x.name).join(', ')}${n === 1 ? ',' : ''})`,
    (push) => ({ tag: 'tuple', val: items.map(push) }),
    n === 2
      ? (w, v) => {
          if (!Array.isArray(v) || v.length !== 2) throw new EncodeError(`${show(v)} is not an array of 2`);
          items[0].enc(w, v[0]);
          items[1].enc(w, v[1]);
        }
      : (w, v) => {
          if (!Array.isArray(v) || v.length !== n) throw new EncodeError(`${show(v)} is not an array of ${n}`);
          for (let i = 0; i < n; i++) items[i].enc(w, v[i]);
        },
    n === 2
      ? (r) => [items[0].dec(r), items[1].dec(r)]
      : (r) => {
          const out = new Array(n);
          for (let i = 0; i < n; i++) out[i] = items[i].dec(r);
          return out;
        },
  ));
}

function fieldList(fields, what) {
  const list = Array.isArray(fields) ? fields : Object.entries(fields);
  for (const [name, ty] of list) {
    if (typeof name !== 'string') throw new TypeError(`${what}: field names are strings`);
    expectType(ty, `${what}: field \`${name}\``);
  }
  return list;
}

// A struct: an object with these fields, encoded in this order. `fields` is an object
// `{name: type}` (its key order) or an array of `[name, type]`.
function struct(name, fields) {
  const list = fieldList(fields, `struct ${name}`);
  return withParts({ fields: list }, new Type(
    name,
    (push) => ({ tag: 'structure', val: [name, list.map(([field, ty]) => ({ name: field, ty: push(ty) }))] }),
    (w, v) => {
      if (v === null || typeof v !== 'object') throw new EncodeError(`${show(v)} is not a ${name} (an object)`);
      for (const [field, ty] of list) {
        const value = v[field];
        if (value === undefined && !ty.optional && ty !== unit) {
          throw new EncodeError(`${name} has no field \`${field}\``);
        }
        ty.enc(w, value);
      }
    },
    (r) => {
      const out = {};
      for (const [field, ty] of list) out[field] = ty.dec(r);
      return out;
    },
  ));
}

// A map: decodes to a `Map`; encodes a `Map`, an array of `[key, value]` or a plain object
// (its string keys), in their order.
function mapType(key, value) {
  expectType(key, 'the map\'s key type');
  expectType(value, 'the map\'s value type');
  return withParts({ key, value }, new Type(
    `Map<${key.name}, ${value.name}>`,
    (push) => {
      const k = push(key);
      return { tag: 'map', val: [k, push(value)] };
    },
    (w, v) => {
      let entries;
      if (v instanceof Map || Array.isArray(v)) entries = [...v];
      else if (v !== null && typeof v === 'object') entries = Object.entries(v);
      else throw new EncodeError(`${show(v)} is not a map`);
      w.varint(entries.length);
      for (const entry of entries) {
        if (!Array.isArray(entry) || entry.length !== 2) throw new EncodeError(`${show(entry)} is not a [key, value]`);
        key.enc(w, entry[0]);
        value.enc(w, entry[1]);
      }
    },
    (r) => {
      const n = r.varint(32);
      const out = new Map();
      for (let i = 0; i < n; i++) {
        const k = key.dec(r);
        out.set(k, value.dec(r));
      }
      return out;
    },
  ));
}

// An enum: `variants` maps each variant's name, in order, to its fields: `null` (a unit
// variant `A`), a type (`A(T)`), an array of types (`A(T, U)`) or an object of fields
// (`A { x: T }`). A value is `{ tag: 'A', val }` (`val` absent for a unit variant, which may
// also be given as the string `'A'`).
function enumeration(name, variants) {
  const list = Array.isArray(variants) ? variants : Object.entries(variants);
  const cases = list.map(([variant, shape], index) => {
    if (shape === null || shape === undefined) return { variant, index, kind: 'unit' };
    if (isType(shape)) return { variant, index, kind: 'newtype', ty: shape };
    if (Array.isArray(shape)) {
      shape.forEach((x, i) => expectType(x, `${name}::${variant} item ${i}`));
      return { variant, index, kind: 'tuple', items: shape };
    }
    return { variant, index, kind: 'fields', fields: fieldList(shape, `${name}::${variant}`) };
  });
  const byName = new Map(cases.map((c) => [c.variant, c]));
  return withParts({ variants: list }, new Type(
    name,
    (push) => ({
      tag: 'enumeration',
      val: [
        name,
        cases.map((c) => ({
          name: c.variant,
          shape:
            c.kind === 'unit'
              ? { tag: 'unit' }
              : c.kind === 'newtype'
                ? { tag: 'newtype', val: push(c.ty) }
                : c.kind === 'tuple'
                  ? { tag: 'tuple', val: c.items.map(push) }
                  : { tag: 'fields', val: c.fields.map(([field, ty]) => ({ name: field, ty: push(ty) })) },
        })),
      ],
    }),
    (w, v) => {
      const tag = typeof v === 'string' ? v : v !== null && typeof v === 'object' ? v.tag : undefined;
      const c = byName.get(tag);
      if (c === undefined) throw new EncodeError(`${show(v)} is not a ${name} (no variant ${show(tag)})`);
      w.varint(c.index);
      if (c.kind === 'unit') return;
      if (typeof v === 'string') throw new EncodeError(`${name}::${tag} needs its \`val\``);
      const val = v.val;
      if (c.kind === 'newtype') c.ty.enc(w, val);
      else if (c.kind === 'tuple') {
        if (!Array.isArray(val) || val.length !== c.items.length) {
          throw new EncodeError(`${name}::${tag}: ${show(val)} is not an array of ${c.items.length}`);
        }
        c.items.forEach((ty, i) => ty.enc(w, val[i]));
      } else {
        if (val === null || typeof val !== 'object') throw new EncodeError(`${name}::${tag}: ${show(val)} is not an object`);
        for (const [field, ty] of c.fields) ty.enc(w, val[field]);
      }
    },
    (r) => {
      const index = r.varint(32);
      const c = cases[index];
      if (c === undefined) throw new DecodeError(`${index} is not a variant of ${name} (it has ${cases.length})`);
      if (c.kind === 'unit') return { tag: c.variant };
      if (c.kind === 'newtype') return { tag: c.variant, val: c.ty.dec(r) };
      if (c.kind === 'tuple') return { tag: c.variant, val: c.items.map((ty) => ty.dec(r)) };
      const val = {};
      for (const [field, ty] of c.fields) val[field] = ty.dec(r);
      return { tag: c.variant, val };
    },
  ));
}

// The types of records, named as in Rust where they describe the same thing.
export const t = Object.freeze({
  unit,
  bool,
  u8: unsignedSmall(8),
  u16: unsignedSmall(16),
  u32: unsignedSmall(32),
  u64: unsignedWide(64, false),
  u64n: unsignedWide(64, true),
  usize: unsignedWide(64, false),
  u128: unsignedWide(128, true),
  i8: signedSmall(8),
  i16: signedSmall(16),
  i32: signedSmall(32),
  i64: signedWide(64, false),
  i64n: signedWide(64, true),
  i128: signedWide(128, true),
  f32: float(32),
  f64: float(64),
  char,
  str,
  string: str,
  bytes,
  option,
  seq,
  vec: seq,
  tuple,
  struct,
  map: mapType,
  enum: enumeration,
  enumeration,
});

// `value` as postcard bytes of `type`.
export function encode(type, value) {
  const w = new Writer();
  expectType(type, 'encode\'s type').enc(w, value);
  return w.buf.slice(0, w.len);
}

// The value of `type` that `bytes` hold (trailing bytes are ignored, as postcard does).
export function decode(type, bytes) {
  return expectType(type, 'decode\'s type').dec(new Reader(bytes));
}

// `type` as the WIT `type-desc`: its nodes, the root first, each node before its children
// (the order `sluice_sdk::abi2::flatten` writes).
export function flatten(type) {
  expectType(type, 'flatten\'s type');
  const nodes = [];
  const push = (ty) => {
    const at = nodes.length;
    nodes.push(null);
    nodes[at] = ty.node(push);
    return at;
  };
  push(type);
  return nodes;
}

// ---------------------------------------------------------------------------------------------
// Frames

// Walks the frames of a partition: `next()` moves to the next frame (false at the end or at
// a truncated frame), whose payload is then `buf[start..end)`; `u32()` reads a count.
export class Frames {
  constructor(buf) {
    this.buf = buf;
    this.pos = 0;
    this.start = 0;
    this.end = 0;
  }

  next() {
    const b = this.buf;
    const at = this.pos;
    if (b.length - at < 4) return false;
    const len = (b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (b[at + 3] << 24)) >>> 0;
    if (b.length - at - 4 < len) return false;
    this.start = at + 4;
    this.end = at + 4 + len;
    this.pos = this.end;
    return true;
  }

  // A `u32` (a group's count), or -1 when fewer than four bytes are left.
  u32() {
    const b = this.buf;
    const at = this.pos;
    if (b.length - at < 4) return -1;
    this.pos = at + 4;
    return (b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (b[at + 3] << 24)) >>> 0;
  }

  // Bytes not consumed.
  rest() {
    return this.buf.length - this.pos;
  }
}

// The payloads of the frames of `buf` (a DecodeError if it ends with a truncated frame).
export function splitFrames(buf) {
  const frames = new Frames(buf);
  const out = [];
  while (frames.next()) out.push(buf.subarray(frames.start, frames.end));
  if (frames.rest() !== 0) throw new DecodeError(`input ends with a truncated frame of ${frames.rest()} bytes`);
  return out;
}

// One frame holding `value` encoded as `type`, appended to `w` (a Writer).
export function writeFrame(w, type, value) {
  const at = w.beginFrame();
  type.enc(w, value);
  w.endFrame(at);
}

// A partition of `values` (frames of `type`), as bytes: what the host sends.
export function framesOf(type, values) {
  const w = new Writer();
  for (const v of values) writeFrame(w, type, v);
  return w.buf.slice(0, w.len);
}

// ---------------------------------------------------------------------------------------------
// The host: log, metrics

const LEVELS = ['error', 'warn', 'info', 'debug'];

const consoleHost = {
  log(level, message) {
    if (typeof console !== 'undefined') console.error(`${level}: ${message}`);
  },
  metric() {},
  panic(message) {
    if (typeof console !== 'undefined') console.error(`panic: ${message}`);
  },
};

let host = consoleHost;

// Connects the WIT imports of `sluice:plugin/host@2.0.0` (`log`, `metric`, `panic`); done by
// `component.js` in a built component. Tests connect a recorder; `null` restores the default
// (log lines to `console.error`, metrics dropped).
export function connectHost(imports) {
  host = imports ?? consoleHost;
}

// A log line for the host, shown with the plugin, its version and the stage. `level` is
// 'error', 'warn', 'info' or 'debug'.
export function log(level, message) {
  if (!LEVELS.includes(level)) throw new TypeError(`log level ${show(level)} is not one of ${LEVELS.join(', ')}`);
  host.log(level, String(message));
}
log.error = (message) => log('error', message);
log.warn = (message) => log('warn', message);
log.info = (message) => log('info', message);
log.debug = (message) => log('debug', message);

// The metrics recorded during the call under way, sent through `host.metric` when it ends
// (whatever its outcome), one per kind and name: as the Rust SDK's `metrics` module.
let recordedMetrics = [];

function record(kind, name, value) {
  if (typeof value === 'bigint') value = Number(value);
  if (typeof value !== 'number') throw new TypeError(`metric ${show(name)}: ${show(value)} is not a number`);
  name = String(name);
  let slot = null;
  for (const m of recordedMetrics) {
    if (m.kind === kind && m.name === name) {
      slot = m;
      break;
    }
  }
  if (slot === null) {
    slot = { kind, name, value: 0, count: 0 };
    recordedMetrics.push(slot);
  }
  if (kind === 'gauge') {
    slot.value = value;
  } else {
    slot.value += value;
    slot.count += 1;
  }
}

// The counter `name`: `.add(n = 1)` (a count that only goes up).
export function counter(name) {
  return { add: (n = 1) => record('counter', name, n) };
}

// The gauge `name`: `.set(value)` (the last value set in a call wins).
export function gauge(name) {
  return { set: (value) => record('gauge', name, value) };
}

// The histogram `name`: `.observe(value)` (the host gets the sum and count).
export function histogram(name) {
  return { observe: (value) => record('histogram', name, value) };
}

// What was recorded in the call under way (a copy): `{kind, name, value, count}`.
export function recorded() {
  return recordedMetrics.map((m) => ({ ...m }));
}

function flushMetrics() {
  const taken = recordedMetrics;
  recordedMetrics = [];
  for (const m of taken) {
    // `count` is a WIT u64, which componentize-qjs takes as a Number.
    host.metric(m.kind, m.name, m.value, m.count);
  }
}

// ---------------------------------------------------------------------------------------------
// Functions: registration and runners

const registry = [];
const byName = new Map();
let described = null;

// What the runner is at, for the error message of an exception.
let at = { what: 'input record', index: 0 };

function decodeAt(type, frames, reader, index, what = 'input record') {
  reader.pos = frames.start;
  reader.end = frames.end;
  try {
    return type.dec(reader);
  } catch (e) {
    if (e instanceof DecodeError) throw new CallError(`${what} ${index} does not decode as ${type.name}: ${e.message}`);
    throw e;
  }
}

function encodeFrame(out, type, value, index, what = 'input record') {
  if (out.len + 4 > out.buf.length) out.reserve(4);
  const start = out.len;
  out.len = start + 4;
  try {
    type.enc(out, value);
  } catch (e) {
    if (e instanceof EncodeError) {
      throw new CallError(`an output for ${what} ${index} does not encode as ${type.name}: ${e.message}`);
    }
    throw e;
  }
  const len = out.len - start - 4;
  const b = out.buf;
  b[start] = len & 0xff;
  b[start + 1] = (len >>> 8) & 0xff;
  b[start + 2] = (len >>> 16) & 0xff;
  b[start + 3] = len >>> 24;
}

function checkEnd(frames) {
  if (frames.rest() !== 0) throw new CallError(`input ends with a truncated frame of ${frames.rest()} bytes`);
}

// Takes the params frame off the front of the input (decoded once per distinct encoding).
function takeParams(f, frames, reader) {
  if (!frames.next()) throw new CallError('the call carries no parameters frame');
  const bytes = frames.buf.subarray(frames.start, frames.end);
  for (const [seen, value] of f.paramsCache) {
    if (seen.length === bytes.length && seen.every((b, i) => b === bytes[i])) return value;
  }
  let value;
  try {
    value = f.params.dec(new Reader(bytes));
  } catch (e) {
    if (e instanceof DecodeError) throw new CallError(`the parameters do not decode as ${f.params.name}: ${e.message}`);
    throw e;
  }
  f.paramsCache.push([bytes.slice(), value]);
  if (f.paramsCache.length > 16) f.paramsCache.shift();
  return value;
}

function emitAll(out, type, result, index, what = 'input record') {
  if (result === null || result === undefined) return;
  if (Array.isArray(result)) {
    for (let i = 0; i < result.length; i++) encodeFrame(out, type, result[i], index, what);
  } else if (typeof result[Symbol.iterator] === 'function' && typeof result !== 'string') {
    for (const item of result) encodeFrame(out, type, item, index, what);
  } else {
    throw new CallError(`returned ${show(result)} for ${what} ${index}, not an array or an iterable (or null for none)`);
  }
}

function errorText(e) {
  return e instanceof Error ? String(e.message) : String(e);
}

// Per-record runners (map, flat_map, filter, key_by, timestamp), fallible or not.
function perRecord(f, input, out, emit, failed) {
  const frames = new Frames(input);
  const reader = new Reader(input);
  const params = f.params ? takeParams(f, frames, reader) : undefined;
  const fn = f.fn;
  const failures = f.fallible ? [] : null;
  let index = 0;
  while (frames.next()) {
    const value = decodeAt(f.input, frames, reader, index);
    at.index = index;
    if (failures === null) {
      emit(out, fn(value, params), index);
    } else {
      const mark = out.len;
      try {
        emit(out, fn(value, params), index);
      } catch (e) {
        if (e instanceof CallError) throw e;
        out.len = mark;
        failed(out);
        failures.push([index, errorText(e)]);
      }
    }
    index++;
  }
  checkEnd(frames);
  if (failures !== null) {
    const start = out.len;
    for (const failure of failures) writeFrame(out, FAILURE, failure);
    out.u32le(out.len - start);
  }
}

const FAILURE = tuple(t.u32, str);

const RUNNERS = {
  map(f, input, out) {
    const type = f.output;
    perRecord(f, input, out, (o, result, index) => encodeFrame(o, type, result, index), () => {});
  },
  'flat-map'(f, input, out) {
    const type = f.output;
    perRecord(f, input, out, (o, result, index) => emitAll(o, type, result, index), () => {});
  },
  filter(f, input, out) {
    perRecord(
      f,
      input,
      out,
      (o, keep, index) => {
        if (typeof keep !== 'boolean') {
          throw new CallError(`returned ${show(keep)} for input record ${index}, not a boolean (a filter keeps a record on true)`);
        }
        o.byte(keep ? 1 : 0);
      },
      (o) => o.byte(0),
    );
  },
  reduce(f, input, out) {
    const frames = new Frames(input);
    const reader = new Reader(input);
    const params = f.params ? takeParams(f, frames, reader) : undefined;
    const type = f.input;
    const fn = f.fn;
    let index = 0;
    let group = 0;
    for (let count = frames.u32(); count >= 0; count = frames.u32()) {
      if (count === 0) throw new CallError('empty group');
      let acc;
      for (let i = 0; i < count; i++) {
        if (!frames.next()) throw new CallError(`group ends early at value ${index}`);
        const value = decodeAt(type, frames, reader, index, 'value');
        at.what = 'value';
        at.index = index;
        acc = i === 0 ? value : fn(acc, value, params);
        index++;
      }
      encodeFrame(out, f.output, acc, group, 'group');
      group++;
    }
    checkEnd(frames);
  },
  'update-state'(f, input, out) {
    const frames = new Frames(input);
    const reader = new Reader(input);
    const params = f.params ? takeParams(f, frames, reader) : undefined;
    const state = option(f.output);
    let index = 0;
    let key = 0;
    for (let count = frames.u32(); count >= 0; count = frames.u32()) {
      const values = new Array(count);
      for (let i = 0; i < count; i++) {
        if (!frames.next()) throw new CallError(`key ends early at value ${index}`);
        values[i] = decodeAt(f.input, frames, reader, index, 'value');
        index++;
      }
      if (!frames.next()) throw new CallError('a key has no state frame');
      const old = decodeAt(state, frames, reader, index, 'state of value');
      at.what = 'key';
      at.index = key;
      const next = f.fn(values, old, params);
      if (next === undefined) {
        throw new CallError(`returned undefined for key ${key} (return the new state, or null to delete it)`);
      }
      encodeFrame(out, state, next, key, 'key');
      key++;
    }
    checkEnd(frames);
  },
  'map-with-state'(f, input, out) {
    const frames = new Frames(input);
    const reader = new Reader(input);
    const params = f.params ? takeParams(f, frames, reader) : undefined;
    const state = option(f.state);
    let index = 0;
    let key = 0;
    while (frames.next()) {
      const k = decodeAt(f.key, frames, reader, key, 'key');
      const count = frames.u32();
      if (count < 0) throw new CallError('a key has no value count');
      const values = new Array(count);
      for (let i = 0; i < count; i++) {
        if (!frames.next()) throw new CallError(`key ends early at value ${index}`);
        values[i] = decodeAt(f.value, frames, reader, index, 'value');
        index++;
      }
      if (!frames.next()) throw new CallError('a key has no state frame');
      const old = decodeAt(state, frames, reader, index, 'state of value');
      at.what = 'key';
      at.index = key;
      const result = f.fn(k, values, old, params);
      if (!Array.isArray(result) || result.length !== 2 || result[0] === undefined) {
        throw new CallError(`returned ${show(result)} for key ${key}, not [new state or null, outputs]`);
      }
      encodeFrame(out, state, result[0], key, 'key');
      const countAt = out.len;
      out.u32le(0);
      let emitted = 0;
      const items = result[1] === null || result[1] === undefined ? [] : result[1];
      if (typeof items[Symbol.iterator] !== 'function') {
        throw new CallError(`returned outputs ${show(items)} for key ${key}, not an array`);
      }
      for (const item of items) {
        encodeFrame(out, f.output, item, key, 'key');
        emitted++;
      }
      out.patchU32le(countAt, emitted);
      key++;
    }
    checkEnd(frames);
  },
  'map-partitions'(f, input, out) {
    const frames = new Frames(input);
    const reader = new Reader(input);
    const params = f.params ? takeParams(f, frames, reader) : undefined;
    const records = [];
    let index = 0;
    while (frames.next()) {
      records.push(decodeAt(f.input, frames, reader, index));
      index++;
    }
    checkEnd(frames);
    at.what = 'partition of';
    at.index = records.length;
    emitAll(out, f.output, f.fn(records, params), `${records.length} records`, 'the partition of');
  },
};
RUNNERS.transform = RUNNERS['map-partitions'];
RUNNERS['key-by'] = RUNNERS.map;
RUNNERS.timestamp = RUNNERS.map;

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

function register(name, kind, spec, fn) {
  if (typeof name !== 'string' || !NAME.test(name)) {
    throw new TypeError(`function name ${show(name)}: use letters, digits and _ (the name stages refer to)`);
  }
  if (byName.has(name)) throw new TypeError(`two functions are named \`${name}\`: a plugin's function names must be unique`);
  if (typeof fn !== 'function') throw new TypeError(`\`${name}\`: the last argument is the function itself`);
  for (const key of ['input', 'output']) expectType(spec[key], `\`${name}\`'s ${key}`);
  if (spec.params !== undefined && spec.params !== null) expectType(spec.params, `\`${name}\`'s params`);
  if (spec.fallible && !['map', 'flat-map', 'filter'].includes(kind)) {
    throw new TypeError(`\`${name}\`: only map, flat_map and filter can be fallible`);
  }
  const f = {
    name,
    kind,
    input: spec.input,
    output: spec.output,
    params: spec.params ?? null,
    fallible: Boolean(spec.fallible),
    key: spec.key,
    value: spec.value,
    state: spec.state,
    fn,
    paramsCache: [],
    lastOutput: 256,
  };
  registry.push(f);
  byName.set(name, f);
  described = null;
  return fn;
}

// `spec` of a per-record function: `{input, output, params?, fallible?}`.
function io(spec, name) {
  if (spec === null || typeof spec !== 'object' || isType(spec)) {
    throw new TypeError(`\`${name}\`: the second argument is {input, output} (types)`);
  }
  return spec;
}

// One record in, one out: `fn(record, params) -> output`.
export function map(name, spec, fn) {
  return register(name, 'map', io(spec, name), fn);
}

// One record in, any number out: `fn(record, params)` returns an array or any iterable (a
// generator, ...), or null/undefined for none.
export function flatMap(name, spec, fn) {
  return register(name, 'flat-map', io(spec, name), fn);
}

// Keep (true) or drop (false) each record: `fn(record, params) -> boolean`. `spec` is the
// input type, or `{input, params?, fallible?}`.
export function filter(name, spec, fn) {
  spec = isType(spec) ? { input: spec } : io(spec, name);
  return register(name, 'filter', { ...spec, output: spec.input }, fn);
}

// Combines two values into one, associatively and commutatively: `fn(a, b, params) -> value`.
// `spec` is the value type, or `{type, params?}`.
export function reduce(name, spec, fn) {
  spec = isType(spec) ? { type: spec } : io(spec, name);
  return register(name, 'reduce', { input: spec.type, output: spec.type, params: spec.params, fallible: spec.fallible }, fn);
}

// A key's new values and its old state (null when it has none) in, its new state out (null
// deletes it): `fn(values, state, params)`. `spec` is `{value, state, params?}`.
export function updateState(name, spec, fn) {
  io(spec, name);
  return register(name, 'update-state', { input: spec.value, output: spec.state, params: spec.params, fallible: spec.fallible }, fn);
}

// A key, its new values (none when it times out) and its state in; `[new state or null,
// outputs]` out: `fn(key, values, state, params)`. `spec` is `{key, value, state, output, params?}`.
export function mapWithState(name, spec, fn) {
  io(spec, name);
  expectType(spec.key, `\`${name}\`'s key`);
  expectType(spec.value, `\`${name}\`'s value`);
  expectType(spec.state, `\`${name}\`'s state`);
  return register(
    name,
    'map-with-state',
    { input: tuple(spec.key, spec.value), output: spec.output, params: spec.params, fallible: spec.fallible, key: spec.key, value: spec.value, state: spec.state },
    fn,
  );
}

// All records of a partition in (an array), any number out: `fn(records, params)`.
export function mapPartitions(name, spec, fn) {
  return register(name, 'map-partitions', io(spec, name), fn);
}

// All records of a batch in (an array), any number out: `fn(records, params)`.
export function transform(name, spec, fn) {
  return register(name, 'transform', io(spec, name), fn);
}

// One record in, its key out: `fn(record, params) -> key`. `spec` is `{input, key, params?}`.
export function keyBy(name, spec, fn) {
  io(spec, name);
  return register(name, 'key-by', { input: spec.input, output: spec.key, params: spec.params, fallible: spec.fallible }, fn);
}

// One record in, its event time (ms since the Unix epoch, a u64) out. `spec` is the input
// type, or `{input, params?}`.
export function timestamp(name, spec, fn) {
  spec = isType(spec) ? { input: spec } : io(spec, name);
  return register(name, 'timestamp', { input: spec.input, output: t.u64, params: spec.params, fallible: spec.fallible }, fn);
}

// The registered functions (for tests): `{name, kind, input, output, params, fallible, fn}`.
export function registered() {
  return registry.map(({ name, kind, input, output, params, fallible, fn }) => ({
    name,
    kind,
    input,
    output,
    params,
    fallible,
    fn,
  }));
}

function message(name, e) {
  if (e instanceof CallError) return `\`${name}\`: ${e.message}`;
  const where = at.what === 'partition of' ? `on a partition of ${at.index} records` : `at ${at.what} ${at.index}`;
  let text = `\`${name}\` threw ${where}: `;
  if (e instanceof Error) {
    text += `${e.name}: ${e.message}`;
    const stack = typeof e.stack === 'string' ? e.stack.trimEnd() : '';
    if (stack) text += `\n${stack}`;
  } else {
    text += show(e);
  }
  return text;
}

// The exported interface `sluice:plugin/functions@2.0.0` (componentize-qjs: the export
// `functions`).
export const functions = {
  // Every registered function, its types as WIT `type-desc`s (node lists, the root first).
  describe() {
    if (described === null) {
      described = registry.map((f) => ({
        name: f.name,
        kind: f.kind,
        input: flatten(f.input),
        output: flatten(f.output),
        params: f.params ? flatten(f.params) : null,
        fallible: f.fallible,
      }));
    }
    return described;
  },

  // Runs `name` over one partition laid out as its kind's input; its output, or throws the
  // error string (the WIT `result`'s error).
  call(name, input) {
    const f = byName.get(name);
    if (f === undefined) {
      throw `the plugin has no function \`${name}\` (it has: ${registry.map((g) => g.name).join(', ')})`;
    }
    if (!(input instanceof Uint8Array)) input = Uint8Array.from(input);
    const out = new Writer(f.lastOutput);
    at = { what: 'input record', index: 0 };
    try {
      RUNNERS[f.kind](f, input, out);
    } catch (e) {
      flushMetrics();
      throw message(name, e);
    }
    f.lastOutput = out.len;
    flushMetrics();
    return out.finish();
  },
};
