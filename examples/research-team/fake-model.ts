// A deterministic stand-in for an LLM: the same prompt always yields the same
// text, streamed token by token with a small delay, honouring an AbortSignal.
// No network, so the demo and the tests run anywhere.

const WORDS = [
  'plasma', 'confinement', 'tokamak', 'stellarator', 'magnetic', 'field', 'energy', 'neutron', 'tritium', 'deuterium',
  'reactor', 'materials', 'heat', 'flux', 'stability', 'turbulence', 'ignition', 'gain', 'laser', 'inertial',
  'cost', 'timeline', 'research', 'evidence', 'risk', 'scaling', 'experiment', 'results', 'funding', 'policy',
]

function hash(s: string): number {
  let h = 2166136261
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619)
  return h >>> 0
}

/** Deterministic text of `words` words for `prompt`. */
export function fakeText(prompt: string, words: number): string {
  let h = hash(prompt)
  const out: string[] = []
  for (let i = 0; i < words; i++) {
    h = Math.imul(h ^ (h >>> 13), 2654435761) >>> 0
    out.push(WORDS[h % WORDS.length] as string)
  }
  const s = out.join(' ')
  return `${s.charAt(0).toUpperCase()}${s.slice(1)}.`
}

/** Per-token delay: `TROUPE_FAKE_MODEL_DELAY_MS` (default 20 ms; tests set 0-2). */
export function tokenDelayMs(): number {
  const v = Number(process.env.TROUPE_FAKE_MODEL_DELAY_MS ?? 20)
  return Number.isFinite(v) && v >= 0 ? v : 20
}

/** Streams `fakeText(prompt, words)` token by token to `onToken`; rejects when `signal` aborts. */
export async function streamCompletion(prompt: string, words: number, onToken: (t: string) => void, signal?: AbortSignal): Promise<string> {
  const text = fakeText(prompt, words)
  const tokens = text.split(/(?<= )/)
  const delay = tokenDelayMs()
  for (const t of tokens) {
    if (signal?.aborted) throw new Error('completion aborted')
    onToken(t)
    if (delay > 0) await new Promise((r) => setTimeout(r, delay))
  }
  return text
}
