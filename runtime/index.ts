// The public entry of Troupe. Everything a user needs is re-exported here; TSDoc
// lives on the declarations and on each re-export below.

/** Defines an agent: a named XState v5 machine plus its delivery policy. */
export { defineAgent } from './agent.ts'
/** XState action: send an action to another agent of the same workflow (committed with the ack). */
export { sendToAgent } from './agent.ts'
/** XState action: a durable delayed action to this same agent (survives restarts, unlike `after`). */
export { sendToSelf } from './agent.ts'
/** XState action: publish a custom workflow event (live while its action runs on, else with its commit). */
export { emitEvent } from './agent.ts'
/** XState action: complete the workflow when the current action commits. */
export { completeWorkflow } from './agent.ts'
/** XState action: fail the workflow when the current action commits. */
export { failWorkflow } from './agent.ts'
/** Computes the retry delay for an attempt under a backoff policy (exported for tests and tools). */
export { backoffDelay } from './agent.ts'
/** Types of agent definitions and their options, and of `sendToAgent`'s options (a delay, a fan-in join). */
export type { AgentDefinition, AgentOptions, BackoffPolicy, JoinOptions, Resolvable, ResolvableValue, SendOptions, TroupeAction } from './agent.ts'

/** Starts a runtime process hosting agents; `Runtime.stop()` drains it. */
export { startRuntime, Runtime, checkEvictionPolicy } from './runtime.ts'
/** Options of `startRuntime`, and the interface of components (supervisor, persister, gateway) a runtime hosts. */
export type { RuntimeOptions, HostedService } from './runtime.ts'

/** Client API: start workflows, send actions, cancel, requeue dead letters, read status, follow events. */
export { TroupeClient, encodePayload } from './client.ts'
/** Types returned by the client. */
export type { StartOptions, DeadLetter, AgentRegistration, RequeueResult } from './client.ts'

/** Configuration from flags and environment. */
export { loadConfig } from './config.ts'
/** The configuration object, and the persistence settings every process and client of a namespace must share. */
export type { TroupeConfig, FleetSettings } from './config.ts'

/** The one error class of Troupe, with a stable `code`. */
export { TroupeError } from './errors.ts'
/** Stable error codes. */
export type { TroupeErrorCode } from './errors.ts'

/** Key and channel names (namespace-aware) and id validation. */
export { Keys, assertWorkflowId, assertAgentName, assertActionType } from './redis/keys.ts'
/** Creates an ioredis client (single node or cluster) with Troupe's reconnect settings. */
export { createRedis, waitReachable } from './redis/connection.ts'
/** A Redis or Redis Cluster client. */
export type { RedisClient } from './redis/connection.ts'

/** Stream-id ordering and event parsing helpers (used by the gateway and the persister). */
export { compareStreamIds, parseEntry, parseLive, isStreamId, FINAL_EVENT_TYPES } from './events.ts'
/** The shared pub/sub connection. */
export { Subscriber } from './subscriber.ts'
/** The runtime's Prometheus metrics. */
export { RuntimeMetrics } from './metrics.ts'
/** Leveled stderr logger. */
export { createLogger } from './log.ts'
/** Logger interface and levels. */
export type { Logger, LogLevel } from './log.ts'

/** Statuses after which a workflow does nothing more; the longest action delay and workflow deadline. */
export { TERMINAL_STATUSES, MAX_DELAY_MS } from './types.ts'
/** Shapes of events, actions and statuses. */
export type { WorkflowEvent, StreamedEvent, ActionEvent, ActionMeta, ActionRecord, ActionState, WorkflowStatus, WorkflowStatusValue } from './types.ts'

/** The built-in supervisor (leader election, fleet health, deadlines, rollups, http_sd), to host with `startRuntime({ services })`. */
export { supervisorService } from '../agents/supervisor.ts'
/** Options of the supervisor service. */
export type { SupervisorOptions } from '../agents/supervisor.ts'
/** The built-in persister (workflow history into Neo4j), to host with `startRuntime({ services })`. */
export { persisterService } from '../agents/persister.ts'
/** Options of the persister service. */
export type { PersisterOptions } from '../agents/persister.ts'
/** The HTTP API, SSE and web UI, to host with `startRuntime({ services })`. */
export { gatewayService } from './gateway/service.ts'
/** Options of the gateway service: its port, host and settings (each falls back to its `TROUPE_*` variable). */
export type { GatewayServiceOptions } from './gateway/service.ts'
/** Builds the gateway on a Redis connection without listening (for `app.inject` in tests, or your own server). */
export { createGateway } from './gateway/server.ts'
/** Options of `createGateway`, and the gateway it returns (its Fastify `app`, `listen()`, `close()`). */
export type { GatewayOptions, Gateway } from './gateway/server.ts'
/** Settings of the gateway as given in code (each group may be partial; the rest comes from the environment). */
export type { GatewaySettingsInput } from './gateway/settings.ts'
