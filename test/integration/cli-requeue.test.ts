// `troupe requeue` as a user runs it: what it requeued and skipped, as text and
// JSON, and its exit codes (usage 2, bad input 3, Redis unreachable 4).
import { spawn } from 'node:child_process'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRuntime, TroupeClient, type Runtime } from '../../runtime/index.ts'
import { switchableAgent } from '../fixtures/agents.ts'
import { eventually, testConfig } from '../helpers/redis.ts'

const cfg = testConfig()
const CLI_TIMEOUT_MS = 30_000
/** While set, `brittle` fails every action; maxAttempts 1 dead-letters it at once. */
let failing = true

const brittle = switchableAgent('brittle', () => failing)

let rt: Runtime
let client: TroupeClient
beforeAll(async () => {
  rt = await startRuntime({ agents: [brittle], config: cfg, metricsPort: false })
  client = TroupeClient.connect(cfg)
})
afterAll(async () => {
  await rt?.stop()
  await client?.close()
})

function troupe(args: string[], redisUrl = cfg.redisUrl): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['bin/troupe.mjs', ...args], { env: { ...process.env, REDIS_URL: redisUrl, TROUPE_NAMESPACE: cfg.namespace, NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr.on('data', (d: Buffer) => (err += d.toString()))
    const killer = setTimeout(() => child.kill('SIGKILL'), CLI_TIMEOUT_MS)
    child.once('error', reject)
    child.once('exit', (code) => {
      clearTimeout(killer)
      resolve({ code, out, err })
    })
  })
}

async function deadOne(): Promise<{ wf: string; actionId: string }> {
  const { workflowId: wf, actionId } = await client.startWorkflow({ agent: 'brittle', type: 'work' })
  await eventually(async () => (await client.getStatus(wf))?.counts.dead === 1, 20_000, 'the action dead-lettered')
  return { wf, actionId }
}

describe('troupe requeue', () => {
  it('requeues the listed dead actions and reports the rest as skipped, as JSON and text', async () => {
    const { wf, actionId } = await deadOne()
    failing = false
    const json = await troupe(['requeue', wf, '--action', actionId, '--action', 'nosuchaction', '--json'])
    expect(json.code, json.err).toBe(0)
    expect(JSON.parse(json.out)).toEqual({ workflowId: wf, requeued: [actionId], skipped: ['nosuchaction'] })
    await eventually(async () => (await client.getStatus(wf))?.counts.done === 1, 20_000, 'the requeued action done')
    const text = await troupe(['requeue', wf, '--action', actionId])
    expect(text.code, text.err).toBe(0)
    expect(text.out).toBe(`requeued 0 actions of ${wf}\nskipped 1 (not dead-lettered there, or without a record to send): ${actionId}\n`)
  })

  it('takes an action id that starts with a dash after --action (one nanoid in 64 does)', async () => {
    failing = true
    const { workflowId: wf } = await client.startWorkflow({ agent: 'brittle', type: 'work' })
    await client.sendAction(wf, 'brittle', 'work', null, { actionId: '-dashed' })
    await eventually(async () => (await client.getStatus(wf))?.counts.dead === 2, 20_000, 'both dead-lettered')
    failing = false
    const r = await troupe(['requeue', wf, '--action', '-dashed', '--json'])
    expect(r.code, r.err).toBe(0)
    expect(JSON.parse(r.out)).toEqual({ workflowId: wf, requeued: ['-dashed'], skipped: [] })
  })

  it('requeues every dead action without --action', async () => {
    failing = true
    const { wf, actionId } = await deadOne()
    failing = false
    const r = await troupe(['requeue', wf])
    expect(r.code, r.err).toBe(0)
    expect(r.out).toBe(`requeued 1 action of ${wf}: ${actionId}\n`)
    await eventually(async () => (await client.getStatus(wf))?.counts.done === 1, 20_000, 'the requeued action done')
  })

  it('exits 2 for usage, 3 for a workflow that is missing or ended, 4 without Redis', async () => {
    failing = true
    const { wf } = await deadOne()
    await client.cancelWorkflow(wf)
    const cases: [string[], number, RegExp][] = [
      [['requeue'], 2, /expected exactly <workflowId>/],
      [['requeue', wf, 'extra'], 2, /expected exactly <workflowId>/],
      [['requeue', wf, '--action'], 2, /argument missing/],
      [['requeue', 'nosuchworkflow'], 3, /no workflow nosuchworkflow/],
      [['requeue', wf], 3, /workflow_ended/],
      [['requeue', wf, '--action', 'a:b'], 3, /invalid action id/],
    ]
    for (const [args, code, msg] of cases) {
      const r = await troupe(args)
      expect(r.code, args.join(' ')).toBe(code)
      expect(r.err, args.join(' ')).toMatch(msg)
    }
    const down = await troupe(['requeue', wf], 'redis://127.0.0.1:1')
    expect(down.code, down.err).toBe(4)
    expect(down.err).toMatch(/cannot reach Redis/)
  }, 90_000)
})
