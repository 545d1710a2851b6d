// `npm run demo`: the research team end to end. Starts two runtime processes (plus
// the built-in services that exist: supervisor, persister, gateway), runs one
// workflow while printing its live event stream, then shows the final status, the
// history in Neo4j (when the persister runs) and a few metrics.
import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { TroupeClient } from '../../runtime/index.ts'
import { EventRenderer } from '../../runtime/cli/render.ts'
import { SERVICES } from '../../runtime/cli/services.ts'
import { readServices } from '../../runtime/cli/fleet.ts'

const root = fileURLToPath(new URL('../..', import.meta.url))
const say = (s: string): void => void process.stdout.write(`\x1b[1m${s}\x1b[0m\n`)
const namespace = process.env.TROUPE_NAMESPACE ?? `demo${Date.now().toString(36)}:`
// Each process serves metrics on a free port of its own: a TROUPE_METRICS_PORT
// from the caller's environment would have both bind the same one.
const { TROUPE_METRICS_PORT: _port, ...callerEnv } = process.env
const env = { ...callerEnv, TROUPE_NAMESPACE: namespace, TROUPE_LOG_LEVEL: process.env.TROUPE_LOG_LEVEL ?? 'warn' }
/** How long the workflow may take before the demo gives up (the fake model needs seconds). */
const WORKFLOW_TIMEOUT_MS = 180_000

// Cut short by a runtime process that dies (nothing would run the workflow's
// remaining actions) or by the timeout, instead of following forever.
const giveUp = new AbortController()

function startProcess(extra: string[]): ChildProcess {
  const child = spawn(process.execPath, ['bin/troupe.mjs', 'start', '--agents', 'examples/research-team/agents.ts', ...extra], { cwd: root, env, stdio: ['ignore', 'inherit', 'inherit'] })
  child.on('exit', (code, sig) => {
    if (!stopping) giveUp.abort(new Error(`a runtime process exited early (${code ?? sig}); its output is above`))
  })
  return child
}

function giveUpReason(): Error {
  const reason: unknown = giveUp.signal.reason
  return reason instanceof Error ? reason : new Error(String(reason))
}

let stopping = false
const builtins = Object.keys(SERVICES).filter((s) => s !== 'gateway')
say(`Troupe demo: namespace ${namespace}, Redis ${process.env.REDIS_URL ?? '(default)'}`)
say(`starting two runtime processes hosting planner, researcher, writer, reviewer${builtins.length ? ` (+ ${builtins.join(', ')})` : ''}`)
const children = [startProcess(builtins.map((s) => `--${s}`)), startProcess(builtins.map((s) => `--${s}`))]
let client: TroupeClient | undefined
let code = 0
try {
  client = TroupeClient.connect({ namespace })
  for (let i = 0; ; i++) {
    if (giveUp.signal.aborted) throw giveUpReason()
    const alive = (await readServices(client)).filter((s) => s.status === 'alive')
    if (alive.length >= 2) break
    if (i > 300) throw new Error('runtime processes did not come up within 30 s')
    await new Promise((r) => setTimeout(r, 100))
  }
  const topic = process.argv[2] ?? 'fusion energy'
  const { workflowId } = await client.startWorkflow({ agent: 'planner', type: 'plan', payload: { topic } })
  say(`\nworkflow ${workflowId}: plan "${topic}" — live events:\n`)
  const timer = setTimeout(() => giveUp.abort(new Error(`workflow ${workflowId} did not end within ${WORKFLOW_TIMEOUT_MS / 1000} s`)), WORKFLOW_TIMEOUT_MS)
  const r = new EventRenderer()
  try {
    for await (const e of client.follow(workflowId, { untilEnd: true, signal: giveUp.signal })) r.write(e)
  } finally {
    clearTimeout(timer)
  }
  r.end()
  if (giveUp.signal.aborted) throw giveUpReason()
  const st = await client.getStatus(workflowId)
  say(`\nstatus: ${st?.status}; agents: ${JSON.stringify(st?.agents)}; actions: ${st?.counts.done} done, ${st?.counts.dead} dead`)
  if (st?.status !== 'completed') code = 1
  const report = (st?.result as { report?: string } | undefined)?.report
  if (report) say(`report: ${report}`)
  const services = await readServices(client)
  say(`\nfleet: ${services.map((s) => `${s.serviceId} ${s.status} [${s.roles}]`).join('; ')}`)
  // Every process: a workflow's work tends to stay in the process that took its
  // first action, so the other one may have counted nothing.
  for (const { serviceId, metricsUrl } of services) {
    if (!metricsUrl) continue
    const text = await (await fetch(metricsUrl)).text()
    const lines = text.split('\n').filter((l) => /^troupe_(actions_total|activations_total|handoffs_total|transitions_total|events_published_total)/.test(l) && !l.endsWith(' 0'))
    say(`\nmetrics of ${serviceId} (${metricsUrl}):`)
    process.stdout.write(`${lines.length > 0 ? lines.join('\n') : '  (no actions ran in this process)'}\n`)
  }
  if (builtins.includes('persister')) {
    // Loaded by path so the demo still runs in a checkout without the persister.
    const historyModule = './history.ts'
    const history = (await import(historyModule)) as { showHistory(c: TroupeClient, wf: string): Promise<void> }
    await history.showHistory(client, workflowId)
  }
} catch (err) {
  process.stderr.write(`demo failed: ${err instanceof Error ? err.message : String(err)}\n`)
  code = 1
} finally {
  stopping = true
  for (const c of children) c.kill('SIGTERM')
  await Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null || c.signalCode !== null ? r(null) : c.once('exit', r)))))
  await client?.close()
}
process.exit(code)
