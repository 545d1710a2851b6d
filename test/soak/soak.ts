// `npm run test:soak [-- --minutes 30]`: mixed load with periodic faults on a
// private Redis; samples the memory of every runtime process and of Redis, checks
// at the end that every workflow's actions were applied exactly once, and writes
// the curve to docs/soak.json (docs/reliability.md summarises it). Every other
// workflow goes to `tee`, which passes each action on to `mirror`, so work that
// agents send each other goes through the faults too.
import { readFileSync, writeFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { TroupeClient } from '../../runtime/index.ts'
import { startRedis } from '../../scripts/services/redis.ts'
import { spawnRuntime, type RuntimeChild } from '../helpers/processes.ts'
import { testConfig } from '../helpers/redis.ts'

const { values } = parseArgs({ options: { minutes: { type: 'string', default: '30' }, rate: { type: 'string', default: '20' } } })
const minutes = Number(values.minutes)
const ratePerSec = Number(values.rate)
const TICKS = 10
const AGENTS = 'test/fixtures/chaos-agents.ts'
const log = (s: string): void => void process.stdout.write(`${new Date().toISOString().slice(11, 19)} ${s}\n`)

function rssMb(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) / 1024 : 0
  } catch {
    return 0
  }
}

const redis = await startRedis({ args: ['--appendfsync', 'everysec'], keepData: true })
// Persistence off: streams are capped and ended workflows expire after a minute, so
// Redis memory can only stay flat if nothing leaks.
const cfg = testConfig({ redisUrl: redis.url, lockTtlMs: 2000, persistence: false })
const env = { TROUPE_PERSISTENCE: 'off', TROUPE_RETENTION_MS: '60000' }
const client = TroupeClient.connect({ ...cfg, retentionMs: 60_000 })
const procs: RuntimeChild[] = []
for (let i = 0; i < 3; i++) procs.push(await spawnRuntime(cfg, { agents: AGENTS, env }))
log(`soak: ${minutes} min, ${ratePerSec} workflows/s x ${TICKS} actions, 3 runtimes, faults every 60 s`)

const samples: { t: number; redisMb: number; runtimesMb: number[]; done: number }[] = []
/** Each workflow and the agents whose snapshots must hold 0..TICKS-1 once each, in order. */
const workflows: { wf: string; agents: string[] }[] = []
let started = 0
let done = 0
/** Ticks verified (a tee workflow's ten ticks count twice: tee's and mirror's). */
let actions = 0
const end = Date.now() + minutes * 60_000
let stopping = false

const producer = (async () => {
  while (Date.now() < end) {
    const t0 = Date.now()
    await Promise.all(
      Array.from({ length: ratePerSec }, async () => {
        const agent = started++ % 2 === 0 ? 'tally' : 'tee'
        const { workflowId } = await client.startWorkflow({ agent, type: 'tick', payload: { i: 0 }, validate: false })
        for (let i = 1; i < TICKS; i++) await client.sendAction(workflowId, agent, 'tick', { i }, { validate: false })
        await client.sendAction(workflowId, agent, 'finish', null, { validate: false })
        workflows.push({ wf: workflowId, agents: agent === 'tee' ? ['tee', 'mirror'] : ['tally'] })
      }),
    )
    await new Promise((r) => setTimeout(r, Math.max(0, 1000 - (Date.now() - t0))))
  }
})()

const checker = (async () => {
  // Verify workflows once they have had time to finish; keep only the backlog.
  while (!stopping || workflows.length > 0) {
    const batch = workflows.splice(0, 200)
    for (const w of batch) {
      const st = await client.getStatus(w.wf)
      if (!st || st.status !== 'completed') {
        workflows.push(w)
        continue
      }
      for (const agent of w.agents) {
        const snap = JSON.parse((await client.redis.hget(client.keys.actor(w.wf, agent), 'snapshot')) ?? '{}') as { context?: { seen?: number[] } }
        const seen = snap.context?.seen ?? []
        if (seen.length !== TICKS || seen.some((v, i) => v !== i)) throw new Error(`workflow ${w.wf} (${agent}): expected 0..${TICKS - 1} once each, got ${JSON.stringify(seen)}`)
        actions += TICKS
      }
      done++
    }
    await new Promise((r) => setTimeout(r, 500))
    if (stopping && Date.now() > end + 120_000) throw new Error(`${workflows.length} workflows never finished`)
  }
})()

let fault = 0
const faults = (async () => {
  while (Date.now() < end - 30_000) {
    await new Promise((r) => setTimeout(r, 60_000))
    const kind = fault++ % 3
    if (kind === 0) {
      const victim = procs.splice(Math.floor(Math.random() * procs.length), 1)[0]
      victim?.signal('SIGKILL')
      procs.push(await spawnRuntime(cfg, { agents: AGENTS, env }))
      log('fault: kill -9 of a runtime process')
    } else if (kind === 1) {
      await client.redis.call('CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes')
      log('fault: CLIENT KILL TYPE normal')
    } else {
      await client.redis.call('CLIENT', 'PAUSE', '2000', 'WRITE')
      log('fault: CLIENT PAUSE 2000 WRITE')
    }
  }
})()

const start = Date.now()
while (Date.now() < end) {
  await new Promise((r) => setTimeout(r, 10_000))
  const used = Number(/used_memory:(\d+)/.exec(await client.redis.info('memory'))?.[1] ?? 0) / 1024 / 1024
  const s = { t: Math.round((Date.now() - start) / 1000), redisMb: Math.round(used * 10) / 10, runtimesMb: procs.map((p) => Math.round(rssMb(p.pid))), done }
  samples.push(s)
  log(`t=${s.t}s redis=${s.redisMb} MB runtimes=${s.runtimesMb.join('/')} MB verified=${done}`)
}
stopping = true
await Promise.all([producer, faults])
await checker
// Every workflow has ended: each of its keys must carry the retention TTL, or Redis
// grows for good (other agents' actor hashes once stayed behind this way).
const lasting: string[] = []
let cursor = '0'
do {
  const [next, batch] = await client.redis.scan(cursor, 'MATCH', `${cfg.namespace}workflow:*`, 'COUNT', 1000)
  cursor = next
  const ttls = await Promise.all(batch.map((k) => client.redis.pttl(k)))
  for (const [i, k] of batch.entries()) if (ttls[i] === -1 && !k.includes(':owner:')) lasting.push(k)
} while (cursor !== '0')
if (lasting.length > 0) throw new Error(`${lasting.length} workflow keys have no TTL, e.g. ${lasting.slice(0, 5).join(', ')}`)
const first = samples.slice(0, Math.max(1, Math.floor(samples.length / 4)))
const last = samples.slice(-Math.max(1, Math.floor(samples.length / 4)))
const avg = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length)
const summary = {
  minutes, ratePerSec, ticksPerWorkflow: TICKS, workflowsVerified: done, actions, lost: 0, duplicated: 0, keysWithoutTtl: lasting.length, faults: fault,
  redisMbFirstQuarter: avg(first.map((s) => s.redisMb)), redisMbLastQuarter: avg(last.map((s) => s.redisMb)),
  runtimeMbFirstQuarter: avg(first.flatMap((s) => s.runtimesMb)), runtimeMbLastQuarter: avg(last.flatMap((s) => s.runtimesMb)),
}
writeFileSync('docs/soak.json', JSON.stringify({ summary, samples }, null, 1))
log(`done: ${JSON.stringify(summary)}`)
await Promise.all(procs.map((p) => p.stop(5000)))
await client.close()
await redis.stop()
