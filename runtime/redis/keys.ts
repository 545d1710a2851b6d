// The one place that names Redis keys and channels (docs/keys.md lists them all).
// Every key of one workflow carries the hash tag `{wf}` so a workflow's scripts run
// on one Redis Cluster slot; the braces are literal.
import { nanoid } from 'nanoid'
import { TroupeError } from '../errors.ts'

const ID_RE = /^[A-Za-z0-9_-]{1,64}$/
const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/
const TYPE_RE = /^[A-Za-z0-9_.\-/]{1,128}$/

/** Throws `TroupeError('bad_id')` unless `id` is safe inside a key (no braces, colons, spaces). */
export function assertWorkflowId(id: unknown): asserts id is string {
  if (typeof id !== 'string' || !ID_RE.test(id)) {
    throw new TroupeError('bad_id', `invalid workflow id ${JSON.stringify(id)}: use 1-64 characters from A-Z a-z 0-9 _ -`)
  }
}

/** Throws `TroupeError('bad_agent')` unless `name` is a usable agent name. */
export function assertAgentName(name: unknown): asserts name is string {
  if (typeof name !== 'string' || !NAME_RE.test(name)) {
    throw new TroupeError('bad_agent', `invalid agent name ${JSON.stringify(name)}: use 1-64 characters from A-Z a-z 0-9 _ . -`)
  }
}

/** Throws `TroupeError('bad_type')` unless `type` is a usable action or event type. */
export function assertActionType(type: unknown): asserts type is string {
  if (typeof type !== 'string' || !TYPE_RE.test(type)) {
    throw new TroupeError('bad_type', `invalid action type ${JSON.stringify(type)}: use 1-128 characters from A-Z a-z 0-9 _ . - /`)
  }
}

/** True when `id` is a syntactically valid workflow id. */
/**
 * A new workflow or action id: a nanoid that does not start with `-`. Ids go
 * on command lines (`troupe tail <wf>`, `troupe requeue <wf> --action <id>`),
 * where one in 64 nanoids, starting with a dash, read as an option.
 */
export function newId(): string {
  const id = nanoid()
  return id.startsWith('-') ? `_${id.slice(1)}` : id
}

export function isWorkflowId(id: string): boolean {
  return ID_RE.test(id)
}

/** Key and channel names under one namespace prefix (`TROUPE_NAMESPACE`). */
export class Keys {
  constructor(readonly ns: string = '') {}

  status(wf: string): string {
    return `${this.ns}workflow:status:{${wf}}`
  }
  events(wf: string): string {
    return `${this.ns}workflow:events:{${wf}}`
  }
  mailbox(wf: string, agent: string): string {
    return `${this.ns}workflow:queue:{${wf}}:${agent}`
  }
  actions(wf: string): string {
    return `${this.ns}workflow:actions:{${wf}}`
  }
  actor(wf: string, agent: string): string {
    return `${this.ns}workflow:actor:{${wf}}:${agent}`
  }
  dead(wf: string): string {
    return `${this.ns}workflow:dead:{${wf}}`
  }
  seq(wf: string): string {
    return `${this.ns}workflow:seq:{${wf}}`
  }
  /** The last requeue call's event id base and answer, for a resent call (requeue.lua); expires by itself. */
  requeued(wf: string): string {
    return `${this.ns}workflow:requeued:{${wf}}`
  }
  lock(wf: string, agent: string): string {
    return `${this.ns}lock:{${wf}}:${agent}`
  }
  /** Pub/sub channel with the live copy of each event. */
  channel(wf: string): string {
    return `${this.ns}workflow:${wf}`
  }
  ready(agent: string): string {
    return `${this.ns}agent:ready:${agent}`
  }
  /**
   * Wake-up marker of an agent (ZSET with at most one member): idle workers block
   * on it with BZPOPMIN, so one hinted actor wakes one worker, not every process.
   */
  wake(agent: string): string {
    return `${this.ns}agent:wake:${agent}`
  }
  /** Pub/sub channel for fleet-wide commands (abort a cancelled workflow's actors). */
  control(): string {
    return `${this.ns}system:control`
  }
  persistence(): string {
    return `${this.ns}persistence:queue`
  }
  /** HASH agent name → registration JSON (version, accepted action types). */
  agents(): string {
    return `${this.ns}system:agents`
  }
  /** ZSET workflow id → createdAt, per owner, for listing a user's workflows. */
  byOwner(owner: string): string {
    return `${this.ns}workflow:owner:${owner}`
  }
  health(serviceId: string): string {
    return `${this.ns}system:health:${serviceId}`
  }
  services(): string {
    return `${this.ns}system:services`
  }
  systemMetrics(name: string): string {
    return `${this.ns}system:metrics:${name}`
  }
  /** Redlock resource held by the supervisor leader. */
  leader(): string {
    return `${this.ns}system:leader`
  }
  /** STRING: fenced leader term, INCR on every takeover. */
  leaderTerm(): string {
    return `${this.ns}system:leader:term`
  }
  /** HASH: current leader's serviceId, term, since. */
  leaderInfo(): string {
    return `${this.ns}system:leader:info`
  }
  /** Pub/sub channel for fleet events (`system.service.dead`, `system.actor.stuck`). */
  systemChannel(): string {
    return `${this.ns}system:events`
  }
  /** ZSET workflow id → deadline (ms), written at start, read by the supervisor leader. */
  deadlines(): string {
    return `${this.ns}system:deadlines`
  }
  /** STREAM of persistence entries the persister could not parse, with the reason. */
  persistenceParked(): string {
    return `${this.ns}persistence:parked`
  }
  /** HASH: access-token hash → session JSON for one user. */
  authToken(user: string): string {
    return `${this.ns}auth:token:{${user}}`
  }
  /** HASH: refresh-token families of one user. */
  authRefresh(user: string): string {
    return `${this.ns}auth:refresh:{${user}}`
  }
  /** HASH: rate-limit and quota state of one user. */
  authRate(user: string): string {
    return `${this.ns}auth:rate:{${user}}`
  }
  /** HASH: hashed credentials issued by `troupe auth issue`. */
  authCredential(user: string): string {
    return `${this.ns}auth:credential:{${user}}`
  }
}
