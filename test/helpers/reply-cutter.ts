// A TCP proxy in front of Redis that can lose one reply: the command runs on the
// server, the connection drops before the client hears back. That is the
// "unknown outcome" a dropped connection leaves, made to happen at one chosen
// command instead of by luck. Until armed it passes everything through. Armed,
// it waits for the first command that matches on any connection, relays the
// replies of the commands sent before it on that connection, and closes both
// sides instead of relaying that command's reply (the server has run it and
// whatever followed it in the same write).
import { createServer, connect, type Server, type Socket } from 'node:net'

/** A running proxy: `url` reaches the Redis behind it. */
export interface ReplyCutter {
  readonly url: string
  /** Resolves once a command for which `match` (given its arguments, the name first) is true has run and its reply was dropped. */
  cutReplyOf(match: (args: string[]) => boolean): Promise<void>
  close(): Promise<void>
}

const CRLF = Buffer.from('\r\n')

/** The end of one RESP value (RESP2 or RESP3) starting at `at` in `buf`, or -1 when it is not all there yet. */
function valueEnd(buf: Buffer, at: number): number {
  const eol = buf.indexOf(CRLF, at)
  if (eol < 0) return -1
  const type = String.fromCharCode(buf[at] ?? 0)
  const n = Number(buf.toString('latin1', at + 1, eol))
  // Simple lines: status, error, integer, RESP3 null, boolean, double, big number.
  if ('+-:_#,('.includes(type)) return eol + 2
  // Length-prefixed: bulk string, RESP3 blob error and verbatim string.
  if ('$!='.includes(type)) {
    if (n < 0) return eol + 2
    const end = eol + 2 + n + 2
    return buf.length >= end ? end : -1
  }
  // Aggregates: array, set, push (n values); map and attribute (n pairs).
  if ('*~>%|'.includes(type)) {
    const count = n < 0 ? 0 : '%|'.includes(type) ? 2 * n : n
    let pos = eol + 2
    for (let i = 0; i < count; i++) {
      pos = valueEnd(buf, pos)
      if (pos < 0) return -1
    }
    // An attribute annotates the value after it: both are one reply.
    return type === '|' ? valueEnd(buf, pos) : pos
  }
  throw new Error(`unexpected RESP type ${JSON.stringify(type)}`)
}

/** The arguments of a request (a RESP array of bulk strings) ending at `end`. */
function requestArgs(buf: Buffer, at: number): string[] {
  const out: string[] = []
  let pos = buf.indexOf(CRLF, at) + 2
  const n = Number(buf.toString('latin1', at + 1, pos - 2))
  for (let i = 0; i < n; i++) {
    const eol = buf.indexOf(CRLF, pos)
    const len = Number(buf.toString('latin1', pos + 1, eol))
    out.push(buf.toString('utf8', eol + 2, eol + 2 + len))
    pos = eol + 2 + len + 2
  }
  return out
}

/** Starts a proxy on a free loopback port in front of the Redis at `target` (a redis:// URL). */
export async function startReplyCutter(target: string): Promise<ReplyCutter> {
  const up = new URL(target)
  let armed: { match: (args: string[]) => boolean; done: () => void } | null = null
  const sockets = new Set<Socket>()

  const server: Server = createServer((client) => {
    const upstream = connect(Number(up.port || 6379), up.hostname)
    sockets.add(client).add(upstream)
    let requests = Buffer.alloc(0)
    let replies = Buffer.alloc(0)
    let sent = 0
    let answered = 0
    /** Index among this connection's commands of the one whose reply is to be lost. */
    let cutAt = -1
    let onCut: (() => void) | null = null
    const closeBoth = (): void => {
      client.destroy()
      upstream.destroy()
    }
    client.on('data', (chunk: Buffer) => {
      requests = Buffer.concat([requests, chunk])
      let pos = 0
      for (;;) {
        const end = valueEnd(requests, pos)
        if (end < 0) break
        if (cutAt < 0 && armed?.match(requestArgs(requests, pos))) {
          cutAt = sent
          onCut = armed.done
          armed = null
        }
        sent++
        pos = end
      }
      requests = requests.subarray(pos)
      upstream.write(chunk)
    })
    upstream.on('data', (chunk: Buffer) => {
      replies = Buffer.concat([replies, chunk])
      let pos = 0
      for (;;) {
        if (cutAt >= 0 && answered === cutAt) {
          // Everything before the chosen command's reply has gone through; that reply never does.
          client.write(replies.subarray(0, pos), () => {
            closeBoth()
            onCut?.()
          })
          replies = Buffer.alloc(0)
          return
        }
        const end = valueEnd(replies, pos)
        if (end < 0) break
        answered++
        pos = end
      }
      client.write(replies.subarray(0, pos))
      replies = replies.subarray(pos)
    })
    client.on('error', closeBoth)
    upstream.on('error', closeBoth)
    client.on('close', () => {
      sockets.delete(client)
      upstream.destroy()
    })
    upstream.on('close', () => {
      sockets.delete(upstream)
      client.destroy()
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const addr = server.address()
  if (addr === null || typeof addr === 'string') throw new Error('proxy has no port')
  const auth = up.username || up.password ? `${up.username}:${up.password}@` : ''
  return {
    url: `redis://${auth}127.0.0.1:${addr.port}${up.pathname}`,
    cutReplyOf: (match) => new Promise<void>((resolve) => (armed = { match, done: resolve })),
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      }),
  }
}
