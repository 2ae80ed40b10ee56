/**
 * Ids Faultline makes up (injections, runs, tokens, requests): 10 characters of Crockford
 * base32, lower case — 50 random bits, short enough to type, no 0/o or 1/l confusion. Uses the
 * Web Crypto random source, the same in Node and in the browser.
 */
const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz'

export function newId(length = 10): string {
  const bytes = new Uint8Array(length)
  globalThis.crypto.getRandomValues(bytes)
  let id = ''
  for (const b of bytes) id += ALPHABET[b & 31]
  return id
}

/** The pattern of the ids a client may choose (injection ids, request ids). */
export const ID_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'
