// Built-in services `troupe start` can host next to the agents, one flag each
// (`--supervisor`, `--persister`, `--gateway`). Each loads its module on demand.
import type { HostedService } from '../runtime.ts'

/** Options a service factory receives from the command line. */
export interface ServiceFlags {
  /** `--gateway-port` and similar values, by flag name. */
  values: Record<string, string | boolean | undefined>
}

/** A service that `troupe start --<name>` can host. */
export interface ServiceEntry {
  readonly describe: string
  /** Extra string flags this service reads (e.g. `gateway-port`). */
  readonly flags?: readonly string[]
  /** Extra boolean flags this service reads (e.g. `supervisor-no-sd`). */
  readonly booleanFlags?: readonly string[]
  create(flags: ServiceFlags): Promise<HostedService>
}

/** The registry: add one entry per built-in service. */
export const SERVICES: Record<string, ServiceEntry> = {
  supervisor: { describe: 'run the leader-elected supervisor (tune with --supervisor-lease, --supervisor-tick, --supervisor-dead-after, --supervisor-stuck-after, --supervisor-sd-port, --supervisor-no-sd)', flags: ['supervisor-lease', 'supervisor-tick', 'supervisor-dead-after', 'supervisor-stuck-after', 'supervisor-sd-port'], booleanFlags: ['supervisor-no-sd'], create: async ({ values }) => (await import('../../agents/supervisor.ts')).supervisorService((await import('./supervisor.ts')).supervisorFlags(values, 'supervisor-')) },
  gateway: { describe: 'serve the HTTP API, SSE and web UI (tune with --gateway-port, --gateway-host)', flags: ['gateway-port', 'gateway-host'], create: async ({ values }) => (await import('../gateway/service.ts')).gatewayService((await import('./gateway.ts')).gatewayFlags(values)) },
  persister: { describe: 'write workflow history to Neo4j (tune with --persister-batch, --persister-claim-idle, --persister-reconcile-every, --persister-retention; connect with --neo4j-uri, --neo4j-user, --neo4j-password, --neo4j-database)', flags: ['neo4j-uri', 'neo4j-user', 'neo4j-password', 'neo4j-database', 'persister-batch', 'persister-claim-idle', 'persister-reconcile-every', 'persister-retention'], create: async ({ values }) => (await import('../../agents/persister.ts')).persisterService((await import('./persister.ts')).persisterFlags(values, 'persister-')) },
}
