// Shared by the tests: the vectors' type names as types, JSON with exact big integers, hex.
import { t } from '../sluice.js';

export const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
export const unhex = (text) => Uint8Array.from(text.match(/../g) ?? [], (h) => parseInt(h, 16));

// JSON.parse, except that an integer beyond Number.MAX_SAFE_INTEGER becomes a BigInt (the
// vectors hold u64 and i64 extremes, which a Number would round).
export function parseJson(text) {
  const marked = text.replace(/"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g, (token) => {
    if (token[0] === '"' || !/^-?\d+$/.test(token) || Number.isSafeInteger(Number(token))) return token;
    return JSON.stringify({ $bigint: token });
  });
  return JSON.parse(marked, (_, v) => (v !== null && typeof v === 'object' && typeof v.$bigint === 'string' ? BigInt(v.$bigint) : v));
}

// Splits `a,b<c,d>,(e,f)` at its top-level commas.
function split(text) {
  const parts = [];
  let depth = 0;
  let cur = '';
  for (const c of text) {
    if (c === '(' || c === '<') depth++;
    if (c === ')' || c === '>') depth--;
    if (c === ',' && depth === 0) {
      parts.push(cur.trim());
      cur = '';
    } else cur += c;
  }
  if (cur.trim() !== '') parts.push(cur.trim());
  return parts;
}

// The type a vectors file names: u8 ... u64, i8 ... i64, bool, f32, f64, str, char, bytes, (),
// (A,B,...), Option<T>, Vec<T>, Map<K,V>. `big`: the 64-bit integers as their BigInt forms.
export function typeOf(name, big = false) {
  name = name.trim();
  const prims = {
    u8: t.u8, u16: t.u16, u32: t.u32, u64: big ? t.u64n : t.u64, u128: t.u128,
    i8: t.i8, i16: t.i16, i32: t.i32, i64: big ? t.i64n : t.i64, i128: t.i128,
    bool: t.bool, f32: t.f32, f64: t.f64, str: t.str, String: t.str, char: t.char,
    bytes: t.bytes, 'Vec<u8>': t.bytes, '()': t.unit,
  };
  if (name in prims) return prims[name];
  const inner = (prefix) => name.slice(prefix.length, -1);
  if (name.startsWith('Option<')) return t.option(typeOf(inner('Option<'), big));
  if (name.startsWith('Vec<')) return t.seq(typeOf(inner('Vec<'), big));
  if (name.startsWith('Map<')) {
    const [k, v] = split(inner('Map<'));
    return t.map(typeOf(k, big), typeOf(v, big));
  }
  if (name.startsWith('(')) return t.tuple(...split(name.slice(1, -1)).map((x) => typeOf(x, big)));
  throw new Error(`unknown type name ${name}`);
}

// `value` of a vectors file as `type` decodes it: BigInts for the BigInt forms, a Uint8Array
// for bytes, a Map for maps.
export function expected(type, value) {
  const walk = (ty, v) => {
    const n = ty.name;
    if (ty === t.u64n || ty === t.i64n || ty === t.u128 || ty === t.i128) return BigInt(v);
    if (ty === t.bytes) return Uint8Array.from(v);
    if (n.startsWith('Option<')) return v === null ? null : walk(ty.inner, v);
    if (n.startsWith('Vec<')) return v.map((x) => walk(ty.item, x));
    if (n.startsWith('Map<')) return new Map(Object.entries(v).map(([k, x]) => [walk(ty.key, k), walk(ty.value, x)]));
    if (n.startsWith('(') && n !== '()') return v.map((x, i) => walk(ty.items[i], x));
    return v;
  };
  return walk(type, value);
}
