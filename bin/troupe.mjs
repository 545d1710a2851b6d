#!/usr/bin/env node
// Entry of the `troupe` command: registers tsx so agent modules written in
// TypeScript load as they are, then hands over to the CLI.
import { register } from 'tsx/esm/api'

register()
const { main } = await import('../runtime/cli/main.ts')
process.exitCode = await main(process.argv.slice(2))
