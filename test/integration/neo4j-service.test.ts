// Proves the local Neo4j bootstrap gives a real, writable Neo4j over Bolt with the
// credentials it reports, and with auth on. Under `npm test` the bootstrap has
// already run in scripts/with-services.ts (which says so in
// TROUPE_NEO4J_BOOTSTRAPPED) and this file checks the server it started; run alone
// it starts one itself. The first run on a machine downloads Neo4j from Maven
// Central, hence the long hook timeout.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import neo4j, { type Driver, type Integer } from 'neo4j-driver'
import { ensureNeo4j, neo4jReachable, type Neo4jService } from '../../scripts/services/neo4j.ts'

describe('ensureNeo4j', () => {
  let service: Neo4jService | undefined
  let driver: Driver | undefined

  beforeAll(async () => {
    service = await ensureNeo4j()
    driver = neo4j.driver(service.url, neo4j.auth.basic(service.user, service.password))
  }, 600_000)

  afterAll(async () => {
    await driver?.close()
    if (service?.started) await service.stop()
  }, 60_000)

  it('writes and reads back over Bolt', async () => {
    if (!driver) throw new Error('driver not created')
    const v = `probe-${Date.now()}`
    const written = await driver.executeQuery('CREATE (n:Probe {v: $v}) RETURN n.v AS v', { v })
    expect(written.records.map((r) => r.get('v') as unknown)).toEqual([v])

    const read = await driver.executeQuery('MATCH (n:Probe {v: $v}) RETURN count(n) AS c, n.v AS v', { v }, { routing: 'READ' })
    expect(read.records).toHaveLength(1)
    expect(read.records[0]?.get('v')).toBe(v)
    expect(neo4j.integer.toNumber(read.records[0]?.get('c') as Integer)).toBe(1)
  })

  it('reports whether credentials are accepted', async () => {
    if (!service) throw new Error('service not started')
    expect(await neo4jReachable(service.url, service.user, service.password)).toBe(true)
    // Only a server the bootstrap started is known to have auth enabled; one the
    // user named in NEO4J_URI may not, and then there is nothing to check here.
    const bootstrapped = service.started || process.env.TROUPE_NEO4J_BOOTSTRAPPED === '1'
    if (!bootstrapped) {
      console.warn('NEO4J_URI names a Neo4j the bootstrap did not start: its auth is not checked')
      return
    }
    expect(await neo4jReachable(service.url, service.user, 'wrong-password')).toBe(false)
  })
})
